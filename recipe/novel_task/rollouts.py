"""Rollouts -> image SFT data: the correct answers of the GRPO model, joined with the training images by row id.

    # rollouts written during GRPO training (trainer.v1.trainer_mode=rollout_dump, trainer.rollout_data_dir=DUMP)
    python -m recipe.novel_task.rollouts to-sft --dump DUMP --train data/jigsaw3/train.parquet \\
        --out runs/grpo/sft_rollouts.parquet [--min-score max] [--max-per-prompt 1] [--all-out all.parquet]
    # or drawn after training by sampling a checkpoint with the evaluation backends
    python -m recipe.novel_task.rollouts sample --model CKPT/final_hf --data data/jigsaw3/train.parquet \\
        --out DUMP_SAMPLED --n 8 --temperature 1.0 [--backend vllm]

Selection (`select_correct`): a rollout is correct when its score reaches `--min-score` (default `max`: the reward's
maximum, 3 = exact permutation + hit + format with the paper's weights), it is not truncated, and it is not a
duplicate of another kept response to the same row (responses compared after stripping whitespace at the ends). Per
row, the latest step's responses come first (closest to the final policy), then the session order; at most
`--max-per-prompt` are kept (default 1: at most one row per image, as the answer-only SFT data has). Each kept rollout
becomes a row of verl's multi-turn SFT layout (`data_prep.sft.sft_row` with the response as the
assistant turn) with the training row's images, found by `extra_info.index`. Every data_prep jigsaw run numbers its
rows from 0, so the join is checked (`check_join`): each record's `gts` must be its row's
`reward_model.ground_truth` (the puzzle's permutation: another `--seed`, `--grid`, `--min-tile-diff` or image order
changes it) and its `data_source` / `dataset` the row's; a mismatch is refused with the counts.
`--answer-only-out` also writes the answer-only SFT rows of the same images (a data-size-matched control);
`--all-out` writes every rollout (e.g. the likelihood of GRPO's own training data under the base model).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from data_prep.sft import sft_row
from verl_ext import jigsaw as J

# examples/run_qwen25vl_jigsaw.sh's MAX_RESPONSE_LENGTH: `sample` draws with the GRPO run's response budget
GPU_RESPONSE_LENGTH = 1024


def write_jsonl_atomic(path: str | os.PathLike, records: list[dict[str, Any]]) -> Path:
    """Write one JSON object per line to a temporary sibling, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_dump(dump_dir: str | Path) -> list[dict[str, Any]]:
    """Every record of `{step}.jsonl` files in a dump folder (the `rollout_dump` trainer mode's or `sample`'s)."""
    files = sorted(Path(dump_dir).glob("*.jsonl"), key=lambda p: (len(p.stem), p.stem))
    if not files:
        raise ValueError(f"no <step>.jsonl rollout files in {dump_dir}")
    records = []
    for path in files:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            rec = json.loads(line)
            if rec.get("row_index") is None or "output" not in rec:
                raise ValueError(
                    f"{path}:{n} has no row_index/output: a verl text-only dump? Train with "
                    "trainer.v1.trainer_mode=rollout_dump (recipe.novel_task.trainer)"
                )
            records.append(rec)
    return records


def select_correct(
    records: Iterable[dict[str, Any]], min_score: float, max_per_prompt: int | None = 1, allow_truncated: bool = False
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The correct, untruncated, de-duplicated rollouts (see the module docstring) and the counts of each filter.

    `allow_truncated` keeps truncated responses: for CPU smoke runs only, where a random model never stops."""
    counts = {"rollouts": 0, "below_min_score": 0, "truncated": 0, "duplicates": 0, "over_max_per_prompt": 0}
    by_row: dict[int, list[dict[str, Any]]] = {}
    for rec in records:
        counts["rollouts"] += 1
        if rec["score"] < min_score - 1e-9:
            counts["below_min_score"] += 1
        elif rec.get("truncated") and not allow_truncated:
            counts["truncated"] += 1
        else:
            by_row.setdefault(int(rec["row_index"]), []).append(rec)
    kept: list[dict[str, Any]] = []
    for row in sorted(by_row):
        seen: set[str] = set()
        for rec in sorted(by_row[row], key=lambda r: (-int(r["step"]), int(r.get("session", 0)), str(r.get("key")))):
            text = rec["output"].strip()
            if text in seen:
                counts["duplicates"] += 1
            elif max_per_prompt is not None and len(seen) >= max_per_prompt:
                counts["over_max_per_prompt"] += 1
            else:
                seen.add(text)
                kept.append(rec)
    counts["kept"], counts["rows_covered"] = len(kept), len({int(r["row_index"]) for r in kept})
    return kept, counts


def rows_by_index(train_files: Sequence[str | Path]) -> dict[int, dict[str, Any]]:
    """The training rows by `extra_info.index`; raises on a repeated index (the join would be ambiguous)."""
    import pyarrow.parquet as pq

    out: dict[int, dict[str, Any]] = {}
    for path in train_files:
        for row in pq.read_table(path).to_pylist():
            index = int(row["extra_info"]["index"])
            if index in out:
                raise ValueError(f"{path}: extra_info.index {index} occurs twice; rollouts cannot be joined by row id")
            out[index] = row
    return out


# (record key, row's value): the record must equal the row's value; the row's ground truth identifies the puzzle.
JOIN_FIELDS = {
    "gts": lambda row: (row.get("reward_model") or {}).get("ground_truth"),
    "data_source": lambda row: row.get("data_source"),
    "dataset": lambda row: (row.get("extra_info") or {}).get("dataset") or row.get("data_source"),  # as `sample`
}


def check_join(records: Sequence[dict[str, Any]], rows: dict[int, dict[str, Any]]) -> dict[str, int]:
    """Refuse rollouts that do not belong to these training rows; returns the counts checked per field.

    Each record must name a row that exists and carry `gts` equal to the row's ground truth; `data_source` and
    `dataset` are compared when the record has them (the `rollout_dump` trainer mode writes both, `sample` the
    dataset).

    Raises:
        ValueError: with the number of records per mismatching field and a first example.
    """
    missing = sorted({int(r["row_index"]) for r in records} - set(rows))
    if missing:
        raise ValueError(
            f"{len(missing)} row ids of the rollouts (e.g. {missing[:10]}) are not in the training parquet: wrong "
            "--train file?"
        )
    bad: dict[str, int] = {}
    checked: dict[str, int] = {}
    example = ""
    for rec in records:
        row = rows[int(rec["row_index"])]
        for field, expected in JOIN_FIELDS.items():
            if rec.get(field) is None and field != "gts":
                continue
            checked[field] = checked.get(field, 0) + 1
            if rec.get(field) != expected(row):
                bad[field] = bad.get(field, 0) + 1
                example = example or f"row {rec['row_index']}: {field} {rec.get(field)!r} vs {expected(row)!r}"
    if bad:
        counts = ", ".join(f"{field} differs in {n} of {checked[field]}" for field, n in sorted(bad.items()))
        raise ValueError(
            f"the rollouts do not belong to the --train rows ({counts} records; e.g. {example}): the dump and the "
            "--train file come from different data_prep runs (--seed, --grid, --min-tile-diff, --limit or sources); "
            "give the --train file the GRPO run trained on"
        )
    return checked


def to_sft_rows(kept: Sequence[dict[str, Any]], rows: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """verl multi-turn SFT rows: each kept rollout's response on its training row's images (`check_join` first)."""
    check_join(kept, rows)
    out = []
    for rec in kept:
        row = sft_row(rows[int(rec["row_index"])], think="", response=rec["output"].strip())
        row["extra_info"].update(rollout_step=int(rec["step"]), rollout_score=float(rec["score"]))
        out.append(row)
    return out


def write_parquet(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Write SFT rows (atomic: temporary sibling, then rename)."""
    import pandas as pd

    if not rows:
        raise ValueError(f"no rows to write to {path}: no rollout passed the selection (see the counts)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pd.DataFrame(rows).to_parquet(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sample_rollouts(backend: Any, train_file: str | Path, n: int, reward: str, limit: int | None = None):
    """Rollout records (the dump's format, step 0) from sampling a checkpoint `n` times per training row."""
    from verl_ext.evaluation.backends import ViewInput
    from verl_ext.evaluation.runner import load_rows

    score_fn = J.compute_dense_score if reward == "dense" else J.compute_score
    rows = load_rows(train_file, limit)
    views = [ViewInput(r.messages, r.image) for r in rows for _ in range(n)]
    texts = backend.generate(views)
    records = []
    for k, text in enumerate(texts):
        row, session = rows[k // n], k % n
        parts = score_fn("", text, row.label)
        length = len(backend.tokenizer(text, add_special_tokens=False)["input_ids"])
        records.append(
            {
                "step": 0,
                "key": f"{row.index}_{session}_0",
                "session": session,
                "row_index": row.index,
                "split": "train",
                "dataset": row.dataset,
                "output": text,
                "gts": row.label,
                "score": float(parts["score"]),
                "reward": {k2: v for k2, v in parts.items() if k2 != "score"},
                "response_length": length,
                "truncated": length >= backend.max_new_tokens,
            }
        )
    return records


def build_parser() -> argparse.ArgumentParser:
    """`to-sft` and `sample` subcommands."""
    p = argparse.ArgumentParser(prog="python -m recipe.novel_task.rollouts", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("to-sft", help="correct rollouts -> verl multi-turn SFT parquet with images")
    t.add_argument("--dump", required=True, help="folder of <step>.jsonl rollout records")
    t.add_argument("--train", required=True, action="append", help="the training parquet(s) (the images)")
    t.add_argument("--out", required=True, help="SFT parquet to write")
    t.add_argument("--min-score", default="max", help="'max' (the jigsaw reward's maximum) or a number")
    t.add_argument("--max-per-prompt", type=int, default=1, help="distinct responses kept per row (0 = all)")
    t.add_argument("--allow-truncated", action="store_true", help="keep truncated rollouts (CPU smoke runs only)")
    t.add_argument("--answer-only-out", default=None, help="also write answer-only SFT rows of the same images")
    t.add_argument("--all-out", default=None, help="also write every rollout as SFT rows (no selection)")
    s = sub.add_parser("sample", help="draw rollouts from a checkpoint with the evaluation backends")
    s.add_argument("--model", required=True)
    s.add_argument("--data", required=True, help="the training parquet")
    s.add_argument("--out", required=True, help="dump folder (writes 0.jsonl)")
    s.add_argument("--n", type=int, default=8, help="samples per row (GRPO's group size)")
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument(
        "--max-new-tokens",
        type=int,
        default=GPU_RESPONSE_LENGTH,
        help=f"response budget (default {GPU_RESPONSE_LENGTH}: the GRPO run's; truncated rollouts are dropped)",
    )
    s.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--limit", type=int, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--reward", choices=("jigsaw", "dense"), default="jigsaw", help="dense: the CPU toy reward")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "sample":
            from verl_ext.evaluation.backends import make_backend

            kwargs = {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "seed": args.seed}
            backend = make_backend(args.backend, args.model, temperature=args.temperature, **kwargs)
            records = sample_rollouts(backend, args.data, args.n, args.reward, args.limit)
            path = write_jsonl_atomic(Path(args.out) / "0.jsonl", records)
            print(f"sampled {len(records)} rollouts -> {path}")
            return 0
        min_score = J.max_score() if args.min_score == "max" else float(args.min_score)
        records = read_dump(args.dump)
        rows = rows_by_index(args.train)
        check_join(records, rows)  # the whole dump against the rows, before any selection
        kept, counts = select_correct(records, min_score, args.max_per_prompt or None, args.allow_truncated)
        write_parquet(to_sft_rows(kept, rows), args.out)
        if args.answer_only_out:
            matched = [sft_row(rows[i], think="") for i in sorted({int(r["row_index"]) for r in kept})]
            write_parquet(matched, args.answer_only_out)
        if args.all_out:
            write_parquet(to_sft_rows(records, rows), args.all_out)
        summary = {**counts, "min_score": min_score, "dump": str(args.dump), "out": str(args.out)}
        Path(str(args.out) + ".json").write_text(json.dumps(summary, indent=1) + "\n")
        print(f"kept {counts['kept']} of {counts['rollouts']} rollouts ({counts['rows_covered']} images) -> {args.out}")
        return 0
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
