"""The digits base: a tiny Qwen2.5-VL that reads handwritten digits upright far better than turned or mirrored (an
invariance gap, issue 19 point 7), shipped with the repository so that `make demo` can start from it in minutes.

The base is what `python -m recipe.domain_grpo.demo --build-base` (and `bench/bench_invariance_gap.py try`) make:
`python -m data_prep digits` (scikit-learn's real digits 0, 1, 3, 4, 7, 8, seeded 70/30 split) → the tiny random
Qwen2.5-VL (`verl_ext.cpu.tiny_qwen25vl`, deterministic) → verl's own SFT trainer on the UPRIGHT train images only
(`BASE_SFT`: 320 steps of 16, lr 3e-3, Adam betas (0.9, 0.95); ~16 min on 2 loaded cores). Its HF folder lies in
`recipe/domain_grpo/assets/digits_upright_base/` with `provenance.json`: the sha256 of every file, a digest of the
train split it was trained on (ids, labels and decoded pixels of every row), the SFT step's command and the library
versions, and its held-out accuracy per view when it was shipped.

Before the demo uses it, `check_shipped_base` re-hashes every file and recomputes the train split's digest from the
data the demo has just built: a changed file, or data other than the data it was trained on (so held-out images it
may have seen), stops the demo with one line naming what differs and how to rebuild. `compare_with_shipped` says
whether a rebuilt base is bit-identical to the shipped one (same machine type and library builds: expected; else the
last bits of the float reductions may differ, and the demo uses the rebuilt one).

    python -m recipe.domain_grpo.digits_base ship --from demo_out   # replace the shipped base with demo_out's build
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from recipe.domain_grpo.demo_pipeline import Pipeline, Settings, StepError

REPO = Path(__file__).resolve().parents[2]
SHIPPED_BASE = REPO / "recipe" / "domain_grpo" / "assets" / "digits_upright_base"
PROVENANCE = "provenance.json"
# The shipped base's SFT settings (verl's SFT trainer keys through `Settings`). beta2 = 0.95: with verl's default
# 0.999 the loss sat on the floor where the digit is at chance (bench/invariance_gap_notes.md, tries t1/t2).
BASE_SFT = {"sft_steps": 320, "sft_batch": 16, "sft_lr": 3e-3, "sft_overrides": ("optim.betas=[0.9,0.95]",)}
# The files of an HF model folder that make the model (verl also saves these; the tokenizer is the tiny byte-level one)
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "processor_config.json",
    "chat_template.jinja",
)


class BaseMismatch(StepError):
    """The shipped base cannot be used as it is (a file or the data differ from its provenance)."""


class DigitsPipeline(Pipeline):
    """The demo's Pipeline on the digits task (`python -m data_prep digits`), with an optionally sized tiny model.

    Note:
        The train/test split has its own seed (`split_seed`, 0: the shipped base's), not the RL runs' `Settings.seed`:
        another rollout seed must not move held-out images into the train split the base was trained on.
    """

    def __init__(
        self, out: str | Path, settings: Settings, size_args: Sequence[str] = (), split_seed: int = 0, **kwargs
    ) -> None:
        super().__init__(out, settings, **kwargs)
        self.size_args = [str(a) for a in size_args]
        self.split_seed = split_seed

    def prepare_data(self) -> None:
        """scikit-learn's digits -> train (upright, 754 rows) / test (323 rows) parquet with the D4 whitelist."""
        argv = [sys.executable, "-m", "data_prep", "digits", "--out", self.data, "--no-progress", "--workers", "0"]
        argv += ["--seed", str(self.split_seed)]
        self.step("data", argv, [self.train_parquet, self.test_parquet], clean=[self.data])

    def build_model(self) -> None:
        """The tiny random Qwen2.5-VL at the requested size (`verl_ext.cpu.tiny_qwen25vl --size/...`)."""
        argv = [sys.executable, "-m", "verl_ext.cpu.tiny_qwen25vl", "--out", self.base_model, *self.size_args]
        self.step("model", argv, [self.base_model / "model.safetensors"], clean=[self.base_model])


def sha256_file(path: Path) -> str:
    """The file's full sha256 (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_digest(parquet: str | Path) -> tuple[str, int]:
    """(sha256 over the split's content, rows): per row its `extra_info.index`, `extra_info.source_path`, ground truth,
    prompt and the decoded pixels of each image (not the PNG bytes, which another Pillow may compress differently),
    rows in index order. Two splits with the same digest hold the same images with the same labels."""
    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    table = pq.read_table(parquet, columns=["prompt", "images", "reward_model", "extra_info"]).to_pylist()
    rows = []
    for row in table:
        info, pixels = row["extra_info"], hashlib.sha256()
        for image in row["images"] or []:
            with Image.open(io.BytesIO(image["bytes"])) as im:
                array = np.asarray(im.convert("RGB"))  # [H, W, 3] uint8
            pixels.update(f"{array.shape}".encode() + array.tobytes())
        prompt = json.dumps(row["prompt"], sort_keys=True)
        label = row["reward_model"]["ground_truth"]
        rows.append((int(info["index"]), str(info.get("source_path")), label, prompt, pixels.hexdigest()))
    digest = hashlib.sha256()
    for rec in sorted(rows):
        digest.update(json.dumps(rec).encode() + b"\n")
    return digest.hexdigest(), len(rows)


def read_provenance(folder: Path) -> dict:
    """The base's `provenance.json`.

    Raises:
        BaseMismatch: it is missing, not JSON, or lacks a field the checks read.
    """
    path = folder / PROVENANCE
    if not path.is_file():
        raise BaseMismatch(f"no {PROVENANCE} in {folder}: restore it (git checkout) or use --build-base")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        record = f"not JSON: {err}"
    if isinstance(record, dict):
        wanted = (("files", None), ("train_split", "digest"), ("train_split", "rows"), ("held_out_when_shipped", "gap"))
        missing = [
            f"{a}.{b}" if b else a
            for a, b in wanted
            if not isinstance(record.get(a), dict) or b not in {None, *record[a]}
        ]
        problem = f"missing {', '.join(missing)}" if missing else None
    else:
        problem = record if isinstance(record, str) else "not a JSON object"
    if problem:
        raise BaseMismatch(f"{path} is unreadable ({problem}): restore it (git checkout) or use --build-base")
    return record


def check_shipped_base(folder: Path, train_parquet: Path) -> dict:
    """The shipped base's provenance, after checking that its files and the demo's train split are what it records.

    Raises:
        BaseMismatch: a file is missing or differs from its recorded sha256, or the train split's digest differs
            (the data were made otherwise, so the held-out split may hold images the base was trained on).
    """
    record_path = folder / PROVENANCE
    record = read_provenance(folder)
    for name, expected in sorted(record["files"].items()):
        path = folder / name
        if not path.is_file() or sha256_file(path) != expected:
            raise BaseMismatch(
                f"the shipped base's {name} is missing or differs from {record_path} "
                "(restore it with git checkout, or rebuild it: --build-base)"
            )
    digest, rows = split_digest(train_parquet)
    if digest != record["train_split"]["digest"]:
        raise BaseMismatch(
            f"the train split {train_parquet} ({rows} rows) is not the one the shipped base was trained on "
            f"({record['train_split']['rows']} rows, {record['train_split']['command']}): its held-out split may hold "
            "images the base saw; rebuild the data with that command, or the base with --build-base"
        )
    return record


def compare_with_shipped(built: Path, folder: Path = SHIPPED_BASE) -> bool | None:
    """Whether the rebuilt base's weights are bit-identical to the shipped base's (its recorded sha256); None when
    there is no shipped base to compare with."""
    if not (folder / PROVENANCE).is_file():
        return None
    record = read_provenance(folder)
    return sha256_file(built / "model.safetensors") == record["files"]["model.safetensors"]


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("verl", "torch", "transformers")}


def ship(out: Path, dest: Path = SHIPPED_BASE, evaluation: str = "base") -> dict:
    """Copy the base built in the work folder `out` (the demo's with `--build-base`, or a `bench_invariance_gap.py
    try` folder) to `dest` with its provenance, its held-out numbers read from `<out>/eval/<evaluation>`; the folder
    is replaced whole (written next to it, then renamed)."""
    from recipe.common.runs import final_hf
    from verl_ext.evaluation.view_gap import gap_record

    hf = final_hf(out / "sft" / "ckpt")
    marker, predictions = out / ".done" / "sft.json", out / "eval" / evaluation / "predictions.jsonl"
    if hf is None or not marker.is_file() or not predictions.is_file():
        raise SystemExit(f"ship: {out} holds no evaluated base; run the demo with --build-base --out {out} first")
    step = json.loads(marker.read_text(encoding="utf-8"))
    gap = gap_record(predictions)
    digest, rows = split_digest(out / "data" / "train.parquet")
    record = {
        "what": "tiny Qwen2.5-VL after verl's SFT trainer on the upright digits train split (recipe/domain_grpo/"
        "digits_base.py)",
        "rebuild": "python -m recipe.domain_grpo.demo --build-base",
        "train_split": {"digest": digest, "rows": rows, "command": "python -m data_prep digits --seed 0"},
        "sft": {**BASE_SFT, "argv": [_relative(a, out) for a in step["argv"]], "seconds": step.get("seconds")},
        "versions": _versions(),
        "held_out_when_shipped": {
            "images": gap["n_images"],
            "accuracy_per_view": gap["accuracy"],
            "accuracy_transformed": gap["transformed"]["value"],
            "gap": [gap["gap"][k] for k in ("value", "ci_low", "ci_high")],
        },
    }
    tmp = Path(tempfile.mkdtemp(prefix=".base-", dir=dest.parent))
    try:
        for name in MODEL_FILES:
            shutil.copyfile(hf / name, tmp / name)
        record["files"] = {name: sha256_file(tmp / name) for name in MODEL_FILES}
        (tmp / PROVENANCE).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


def _relative(arg: str, out: Path) -> str:
    """A command argument with the work folder and the interpreter written as placeholders."""
    return arg.replace(str(out), "<out>").replace(sys.executable, "python")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m recipe.domain_grpo.digits_base", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("ship",))
    p.add_argument("--from", dest="source", required=True, help="a demo folder run with --build-base")
    p.add_argument("--evaluation", default="base", help="the base's evaluation under <from>/eval/ (a bench try: sft)")
    args = p.parse_args(argv)
    record = ship(Path(args.source).resolve(), evaluation=args.evaluation)
    print(json.dumps(record["held_out_when_shipped"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
