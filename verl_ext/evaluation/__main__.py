"""CLI: evaluate a model on a test parquet, write metrics.json, predictions.jsonl and PNG plots.

    python -m verl_ext.evaluation --model DIR --data test.parquet --out DIR [--transforms rot90,rot180,hflip]
        [--backend hf|vllm] [--max-new-tokens N] [--batch-size B] [--limit N] [--seed S] [--no-distributions]

Outputs in --out: metrics.json (written last, atomically: its presence means the evaluation finished),
predictions.jsonl (one record per row and view), confusion.png, view_accuracy.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from verl_ext.evaluation import runner


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the evaluation CLI."""
    p = argparse.ArgumentParser(prog="python -m verl_ext.evaluation", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="local model directory (weights + processor)")
    p.add_argument("--data", required=True, help="test parquet in the data_prep schema")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--transforms",
        default=None,
        help="comma-separated views to compare with the original (default: the union of the rows' whitelists; "
        "'none' for no transformed view)",
    )
    p.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N rows only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-distributions", action="store_true", help="skip the answer distributions (no JS metric)")
    p.add_argument("--device", default=None, help="hf backend: torch device (default cuda if available)")
    p.add_argument("--dtype", default=None, help="hf backend: float32 / bfloat16 (default by device)")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm backend")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.8, help="vllm backend")
    p.add_argument("--max-model-len", type=int, default=4096, help="vllm backend")
    p.add_argument("--no-progress", action="store_true")
    return p


def backend_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of the chosen backend's constructor."""
    common = {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "seed": args.seed}
    if args.backend == "hf":
        return {**common, "device": args.device, "dtype": args.dtype}
    return {
        **common,
        "tensor_parallel_size": args.tensor_parallel_size,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "max_model_len": args.max_model_len,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; returns the process exit code."""
    from tqdm import tqdm

    from verl_ext.evaluation.backends import make_backend
    from verl_ext.evaluation.plots import plot_confusion, plot_view_accuracy

    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise SystemExit("--batch-size and --max-new-tokens must be >= 1")
    rows = runner.load_rows(args.data, args.limit)
    if not rows:
        raise SystemExit(f"no rows in {args.data}")
    if args.transforms is None:
        transforms = runner.default_transforms(rows)
    elif args.transforms.strip().lower() in ("", "none"):
        transforms = []
    else:
        try:
            transforms = runner.check_transforms([t.strip() for t in args.transforms.split(",") if t.strip()])
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
    start = time.time()
    try:
        backend = make_backend(args.backend, args.model, **backend_kwargs(args))
    except RuntimeError as err:  # e.g. vLLM not installed
        raise SystemExit(f"error: {err}") from None
    views = [runner.IDENTITY, *transforms]
    total = sum(runner.view_allowed(r, v) for r in rows for v in views) * (1 if args.no_distributions else 2)
    with tqdm(total=total, desc="evaluate (views)", disable=args.no_progress, file=sys.stderr) as bar:
        outputs = runner.run_views(
            rows, backend, transforms, args.batch_size, not args.no_distributions, progress=bar.update
        )
    metrics, records = runner.evaluate(rows, outputs)
    metrics["run"] = {
        "model": str(args.model),
        "data": str(args.data),
        "backend": args.backend,
        "seed": args.seed,
        "max_new_tokens": args.max_new_tokens,
        "limit": args.limit,
        "seconds": round(time.time() - start, 2),
    }
    out = Path(args.out)
    text = "".join(json.dumps(runner.nan_to_none(r)) + "\n" for r in records)
    runner.write_text_atomic(out / "predictions.jsonl", text)
    conf = metrics["confusion"]
    plot_confusion(conf["matrix"], conf["rows"], conf["columns"], str(out / "confusion.png"))
    plot_view_accuracy(metrics["views"], str(out / "view_accuracy.png"))
    runner.write_json_atomic(out / "metrics.json", metrics)
    inv = metrics["invariance"]
    print(
        f"accuracy {metrics['accuracy']:.4f} on {metrics['n']} rows; transforms {inv['transforms']}: "
        f"accuracy {inv['mean_accuracy_transformed']:.4f}, agreement {inv['mean_agreement']:.4f}, "
        f"JS {inv['mean_js']:.4g} -> {out / 'metrics.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
