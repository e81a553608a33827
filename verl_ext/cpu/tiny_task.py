"""A tiny image-classification task in verl's multimodal parquet schema, plus its rule reward (tests and CPU demo).

Rows follow upstream ``examples/data_preprocess/geo3k.py``'s layout, which ``RLHFDataset`` reads:
``data_source``, ``prompt`` (chat messages whose text holds a literal ``<image>``), ``images``
(``[{"bytes", "path"}]``), ``ability``, ``reward_model`` (``{"style": "rule", "ground_truth"}``), ``extra_info``
(``split``, ``index``, ``class_names``, ``transforms``). Images are small solid-colour squares with a stripe, one class
per colour.

    python -m verl_ext.cpu.tiny_task --out /tmp/tiny_task      # writes train.parquet and val.parquet

Rewards for ``reward.custom_reward_function.path=<this file>``:

* ``compute_score``: 1.0 if the text inside the last ``<answer></answer>`` equals the label after normalisation
  (lower-case, spaces/underscores removed), plus 0.1 for the ``<think>...</think><answer>...</answer>`` format. Only
  exact matches count (no substring credit). A random-weight policy scores 0 on every sample, so GRPO's advantages
  (and gradients) are all zero.
* ``compute_dense_score``: ``compute_score`` plus the share of response characters that occur in the label's name
  (e.g. r/e/d for "red"). It differs between the samples of a random policy, so smoke runs get real gradients.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any

DATA_SOURCE = "tiny_colors"
CLASSES = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220)}
TRANSFORMS = ["rot90", "rot180", "rot270"]
# Questions of different token lengths, cycled per row: consecutive rows never have equal prompt lengths. A batch whose
# sequences all have the same length makes TransferQueue pack the (4, L) M-RoPE position ids as a jagged tensor ragged
# over the wrong dimension, which verl's maybe_fix_3d_position_ids then breaks (unbind fails in update_actor).
QUESTIONS = ("Which class does this image show?", "What is in this picture?", "Name the class of this image.")
PROMPT = "<image>{question} Classes: {classes}. Think in <think></think>, then give the class in <answer></answer>."
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_FORMAT = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$", re.DOTALL)


def _png(rgb: tuple[int, int, int], size: int, index: int) -> bytes:
    """A ``size`` x ``size`` PNG of one colour with a darker stripe whose position depends on ``index``."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), rgb)
    top = (index * 7) % (size // 2)
    ImageDraw.Draw(image).rectangle([0, top, size - 1, top + size // 8], fill=tuple(c // 2 for c in rgb))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_rows(num_rows: int, split: str, image_size: int = 56) -> list[dict[str, Any]]:
    """``num_rows`` rows cycling through the classes, in verl's multimodal RL schema."""
    names = list(CLASSES)
    rows = []
    for index in range(num_rows):
        label = names[index % len(names)]
        question = QUESTIONS[index % len(QUESTIONS)]
        rows.append(
            {
                "data_source": DATA_SOURCE,
                "prompt": [{"role": "user", "content": PROMPT.format(question=question, classes=", ".join(names))}],
                "images": [{"bytes": _png(CLASSES[label], image_size, index), "path": None}],
                "ability": "classification",
                "reward_model": {"style": "rule", "ground_truth": label},
                "extra_info": {"split": split, "index": index, "class_names": names, "transforms": TRANSFORMS},
            }
        )
    return rows


def write_parquet(rows: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write ``rows`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def build_tiny_task(out_dir: str | os.PathLike, train_rows: int = 6, val_rows: int = 3) -> tuple[Path, Path]:
    """Write ``train.parquet`` and ``val.parquet`` to ``out_dir`` (kept if both exist); returns their paths."""
    out = Path(out_dir)
    train, val = out / "train.parquet", out / "val.parquet"
    if not train.exists():
        write_parquet(make_rows(train_rows, "train"), train)
    if not val.exists():
        write_parquet(make_rows(val_rows, "val"), val)
    return train, val


def _normalise(text: str) -> str:
    return re.sub(r"[\s_]+", "", text).lower()


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict[str, Any] | None = None, **kwargs: Any
) -> float:
    """Accuracy (exact normalised match of the last ``<answer>``) + 0.1 for the think/answer format."""
    answers = _ANSWER.findall(solution_str)
    accuracy = float(bool(answers) and _normalise(answers[-1]) == _normalise(str(ground_truth)))
    return accuracy + 0.1 * float(bool(_FORMAT.match(solution_str)))


def compute_dense_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict[str, Any] | None = None, **kwargs: Any
) -> float:
    """``compute_score`` + the share of the response's characters that are letters of the label (smoke-test signal)."""
    letters = set(_normalise(str(ground_truth)))
    share = sum(char.lower() in letters for char in solution_str) / max(1, len(solution_str))
    return compute_score(data_source, solution_str, ground_truth, extra_info) + share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for train.parquet and val.parquet")
    parser.add_argument("--train-rows", type=int, default=6)
    parser.add_argument("--val-rows", type=int, default=3)
    args = parser.parse_args()
    for path in build_tiny_task(args.out, args.train_rows, args.val_rows):
        print(path)


if __name__ == "__main__":
    main()
