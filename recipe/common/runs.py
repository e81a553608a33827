"""What a finished verl run left behind: its file-logger metrics and the final checkpoint's Hugging Face weights.

One reader and one finder for every recipe, study, report and bench (no other copy):

    read_metrics(path)          verl's file logger (`VERL_FILE_LOGGER_PATH`, JSON lines) -> {step: {key: value}}
    metric_series(path, key)    [(step, value), ...] of one key, steps in order
    final_hf(ckpt_dir)          the HF weights of the last checkpoint verl recorded in `ckpt_dir` (or None)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# verl writes the last saved step here (`trainer.default_local_dir`), and the weights under global_step_<N>/
LATEST_FILE = "latest_checkpointed_iteration.txt"
# where a checkpoint's HF weights sit: verl's SFT trainer, then the RL trainer's actor
HF_SUBDIRS = ("huggingface", "actor/huggingface")


def read_metrics(path: str | os.PathLike) -> dict[int, dict[str, float]]:
    """verl's file-logger metrics as {step: {key: value}}, steps in file order; a missing file gives {}.

    verl's `FileLogger.log(data, step)` appends one JSON line `{"step": N, "data": {...}}` per call, and a trainer may
    log more than once for a step (training and validation metrics, a trainer mode's own keys).

    Args:
        path: the JSON-lines file.

    Note:
        Every record of a step is merged (a key logged twice for one step keeps its later value): keeping only the
        last record of a step would drop whatever an earlier call logged for it. Blank lines are skipped.

    Raises:
        ValueError: a line that is not a `{"step": int, "data": {...}}` record (names the file and line).
    """
    path = Path(path)
    steps: dict[int, dict[str, float]] = {}
    if not path.exists():
        return steps
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step, data = int(record["step"]), record["data"]
            if not isinstance(data, dict):
                raise TypeError("'data' is not a mapping")
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{number}: not a verl metrics record ({err})") from None
        steps.setdefault(step, {}).update(data)
    return steps


def metric_series(path: str | os.PathLike, key: str) -> list[tuple[int, float]]:
    """(step, value) of `key` in verl's metrics file, by step; steps that did not log `key` are left out."""
    return [(step, float(data[key])) for step, data in sorted(read_metrics(path).items()) if key in data]


def final_hf(ckpt_dir: str | os.PathLike) -> Path | None:
    """The HF weights of the last checkpoint verl recorded in `ckpt_dir`, or None when there are none (yet).

    Args:
        ckpt_dir: verl's `trainer.default_local_dir`: `latest_checkpointed_iteration.txt` names the last step N, whose
            weights are `global_step_N/huggingface` (SFT trainer) or `global_step_N/actor/huggingface` (RL trainer,
            with `hf_model` among `checkpoint.save_contents`).

    Note:
        A folder counts only when it holds `config.json` (an interrupted save leaves none).
    """
    ckpt = Path(ckpt_dir)
    latest = ckpt / LATEST_FILE
    if not latest.is_file():
        return None
    step = ckpt / f"global_step_{latest.read_text().strip()}"
    for sub in HF_SUBDIRS:
        if (step / sub / "config.json").is_file():
            return step / sub
    return None
