"""RL rows (data_prep) and preference pairs -> rows for verl 0.9.1's own SFT trainer (`verl.trainer.sft_trainer`).

    python -m data_prep.sft --in data/ucm/train_8shot.parquet --out data/ucm/sft_train_8shot.parquet
    python -m data_prep.sft --in ... --out ... --augment --copies 3 --transforms rot90,rot180,rot270

verl's `MultiTurnSFTDataset` reads a `messages` column (chat turns; a user turn's literal "<image>" is replaced by
the next entry of the `images` column) and trains on the assistant turns. Each SFT row = the RL row's prompt + an
assistant turn `<think>{think}</think><answer>{label}</answer>` (the label is `reward_model.ground_truth`, the same
text the RL reward accepts), the same `images`, and the RL row's `data_source`/`extra_info`.
`--augment` (the `sft_da` baseline) adds `--copies` transformed copies of each row, each with one transform drawn
from the row's whitelist (`extra_info.transforms`) ∩ `--transforms`, seeded (`verl_ext.transforms.draw_transform`).
Other SFT sources build their rows here too: a GRPO run's correct rollouts (`sft_row(..., response=...)`, used by
`recipe/novel_task/rollouts.py`) and a preference parquet's chosen responses (`preference_sft_rows`, PIVOT's SFT
baseline). Parquet files are written atomically (`write_sft_parquet`).
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from verl_ext.transforms import apply_transform, draw_transform

DEFAULT_THINK = "The image shows {label}."


def answer_text(label: str, think: str = DEFAULT_THINK) -> str:
    """The assistant turn: `<think>…</think><answer>{label}</answer>`, the format the RL reward scores as 1."""
    return f"<think>{think.format(label=label)}</think><answer>{label}</answer>"


def transform_image_bytes(image: dict[str, Any], name: str) -> dict[str, Any]:
    """One `images` entry ({bytes, path}) transformed by `name`, re-encoded as lossless PNG."""
    with Image.open(io.BytesIO(image["bytes"])) as source:
        out = apply_transform(source.convert("RGB"), name)
    buffer = io.BytesIO()
    out.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": image.get("path")}


def sft_row(
    row: dict[str, Any], think: str, transform: str | None = None, response: str | None = None
) -> dict[str, Any]:
    """One SFT row from one RL row, optionally with its images transformed; `response` (e.g. a correct rollout)
    replaces the label-built assistant turn."""
    label = str(row["reward_model"]["ground_truth"])
    images = [dict(image) for image in row["images"]]
    if transform is not None:
        images = [transform_image_bytes(image, transform) for image in images]
    extra_info = dict(row.get("extra_info") or {})
    extra_info["sft_transform"] = transform or "identity"
    messages = [dict(m) for m in row["prompt"]] + [
        {"role": "assistant", "content": answer_text(label, think) if response is None else response}
    ]
    return {"messages": messages, "images": images, "data_source": row["data_source"], "extra_info": extra_info}


def convert_rows(
    rows: Iterable[dict[str, Any]],
    think: str = DEFAULT_THINK,
    augment: bool = False,
    copies: int = 1,
    transforms: Sequence[str] = ("rot90", "rot180", "rot270", "hflip", "vflip"),
    seed: int = 0,
) -> list[dict[str, Any]]:
    """SFT rows: each RL row once, plus (with `augment`) `copies` transformed copies drawn from its whitelist.

    Raises:
        ValueError: `augment` and a row allows none of `transforms`.
    """
    out = []
    for i, row in enumerate(rows):
        out.append(sft_row(row, think))
        if not augment:
            continue
        allowed = set(row["extra_info"]["transforms"])
        candidates = [t for t in transforms if t in allowed and t != "identity"]
        if not candidates:
            raise ValueError(f"row {i} allows {sorted(allowed)}, none of --transforms {list(transforms)}")
        key = str(row["extra_info"].get("index", i))
        out.extend(sft_row(row, think, draw_transform(candidates, seed, copy, key)) for copy in range(copies))
    return out


def preference_sft_rows(pairs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The SFT rows of preference pairs (`data_prep preference-pairs`): the prompt + the CHOSEN response as the
    assistant turn, the same images, so SFT and DPO train on the same items."""
    rows = []
    for row in pairs:
        messages = [dict(m) for m in row["prompt"]] + [{"role": "assistant", "content": row["chosen"]}]
        images = [dict(im) for im in row["images"]]
        rows.append({"messages": messages, "images": images, "data_source": row["data_source"]})
    return rows


def write_sft_parquet(rows: list[dict[str, Any]], path: str | os.PathLike, from_records: bool = False) -> Path:
    """Write `rows` to `path` atomically (a temporary file in the same folder, then a rename).

    `from_records=False` goes through pandas (`DataFrame.to_parquet`), `True` through `pyarrow.Table.from_pylist`
    (what each caller used before; the two infer the nested columns' types differently).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    os.close(fd)
    try:
        if from_records:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows), tmp)
        else:
            pd.DataFrame(rows).to_parquet(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: read an RL parquet, write the SFT parquet."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--in", dest="src", required=True, help="RL parquet written by data_prep")
    parser.add_argument("--out", required=True, help="SFT parquet to write")
    parser.add_argument("--think", default=DEFAULT_THINK, help="text inside <think></think>; {label} is replaced")
    parser.add_argument("--augment", action="store_true", help="sft_da: add transformed copies")
    parser.add_argument("--copies", type=int, default=1, help="transformed copies per row with --augment")
    parser.add_argument("--transforms", default="rot90,rot180,rot270,hflip,vflip", help="candidates (∩ row whitelist)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.copies < 1:
        parser.error("--copies must be >= 1")
    rows = pd.read_parquet(args.src).to_dict(orient="records")
    names = [t.strip() for t in args.transforms.split(",") if t.strip()]
    out = convert_rows(rows, args.think, args.augment, args.copies, names, args.seed)
    write_sft_parquet(out, args.out)
    print(f"wrote {len(out)} SFT rows ({len(rows)} source rows) to {args.out}")


if __name__ == "__main__":
    main()
