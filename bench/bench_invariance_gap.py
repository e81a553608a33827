"""A base model with an invariance gap (issue 19, point 7), then the domain terms measured from it (CPU, tiny model).

    python bench/bench_invariance_gap.py try --out bench_out/gap --name t1 --size wide --sft-steps 400
    python bench/bench_invariance_gap.py rl --out bench_out/gap --name t1 --variants grpo,grpo_da,dc,dc_dr --seeds 0,1
    python bench/bench_invariance_gap.py rl --out bench_out/gap --name t1 --rl-tag anchored \
        --rl-override actor_rollout_ref.actor.use_kl_loss=true ...    # other RL settings: their own runs and rows
    python bench/bench_invariance_gap.py report --out bench_out/gap [--write-results]

The task: scikit-learn's real handwritten digits (`python -m data_prep digits`: 0, 1, 3, 4, 7, 8; the square's 8
symmetries keep each label, see data_prep/digits.py). The warm start is verl's SFT trainer on UPRIGHT train images
only, so whatever it learns about a digit's strokes is tied to one orientation: held-out accuracy on a turned or
mirrored view can fall far below the upright view's. That gap is what DC (and DA) have to close.

`try` builds one base (tiny model of a given size -> SFT -> the evaluation CLI on the held-out digits under every
transform) and appends its record to `<out>/tries.jsonl`: size, SFT steps/batch/lr, minutes, accuracy per view and
the gap (original minus the mean of the 7 transformed views) with a paired bootstrap interval over images
(`verl_ext.stats.paired_cluster_bootstrap`, the image the resampled unit, its 8 views paired). `rl` runs the RL
variants from one try's base (`grpo`, `grpo_da`: GRPO on T(x) swapped in before generation,
recipe/domain_grpo/config/method/grpo_da.yaml; `dc`, `dc_dr`, `dr`) over seeds, each evaluated on every view; `report`
prints (and writes RESULTS.md's `invariance_gap` section from) everything recorded, with the reading written by hand in
`bench/invariance_gap_notes.md`. `--rl-override` (repeatable) adds Hydra keys to every RL run and needs `--rl-tag`,
which names those runs' folders and groups them in the table: seeds are pooled, and compared with grpo, only under
one tag, and a tag recorded with two different settings is refused.

The steps are `recipe/domain_grpo/digits_base.py`'s DigitsPipeline (the demo's Pipeline on the digits task: resumable,
one subprocess per step, exactly the user's CLIs) with a size option for the model, and more of verl's SFT keys passed
to its SFT step (`--sft-override`, e.g. Adam's betas: `Settings.sft_overrides`). `make demo` runs the `default` rows'
grpo and dc_dr for one seed from the t3 base, shipped (`python -m recipe.domain_grpo.digits_base ship --from
<out>/tries/<name> --evaluation sft` writes a try as the shipped base).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe.domain_grpo import demo_pipeline  # noqa: E402
from recipe.domain_grpo.demo_pipeline import D4_TRANSFORMS, Settings  # noqa: E402
from recipe.domain_grpo.digits_base import DigitsPipeline  # noqa: E402
from verl_ext.evaluation.view_gap import IDENTITY, gap_record  # noqa: E402

SIZE_FIELDS = ("hidden", "layers", "vision_hidden", "vision_depth")


def evaluate_record(pipe: DigitsPipeline, name: str, model: Path) -> dict:
    """Run the evaluation CLI on `model` and summarise it (accuracy per view, the gap with its interval)."""
    metrics = pipe.evaluate(name, model)
    return {
        **gap_record(pipe.out / "eval" / name / "predictions.jsonl"),
        "valid_rate": metrics["valid_rate"],
        "mean_js": metrics["invariance"]["mean_js"],
        "mean_agreement": metrics["invariance"]["mean_agreement"],
    }


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line (the records of every try/run, read back by `report`)."""
    with path.open("a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def settings_from(args: argparse.Namespace) -> Settings:
    """The pipeline's Settings from the command line (SystemExit with one line for a bad --rl-tag/--rl-override)."""
    try:
        return _settings(args)
    except ValueError as err:
        raise SystemExit(f"bench_invariance_gap: {err}") from None


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(
        sft_steps=args.sft_steps,
        sft_batch=args.sft_batch,
        sft_lr=args.sft_lr,
        sft_overrides=tuple(args.sft_override or ()),
        rl_steps=args.rl_steps,
        lr=args.lr,
        dc_weight=args.dc_weight,
        eval_limit=args.eval_limit or None,
        eval_batch=args.eval_batch,
        transforms=D4_TRANSFORMS,
        rl_overrides=tuple(args.rl_override or ()),
        rl_tag=args.rl_tag,
    )


def size_args(args: argparse.Namespace) -> list[str]:
    out = ["--size", args.size]
    for name in SIZE_FIELDS:
        if getattr(args, name) is not None:
            out += ["--" + name.replace("_", "-"), str(getattr(args, name))]
    return out


def run_try(args: argparse.Namespace) -> dict:
    """One base: data, sized model, SFT on upright digits, evaluation on every view; its record."""
    s = settings_from(args)
    pipe = DigitsPipeline(Path(args.out) / "tries" / args.name, s, size_args(args))
    start = time.perf_counter()
    pipe.prepare_data()
    pipe.build_model()
    warm = pipe.sft_warm_start()
    record = {
        "kind": "try",
        "name": args.name,
        "size": size_args(args),
        "sft_steps": s.sft_steps,
        "sft_batch": s.sft_batch,
        "sft_lr": s.sft_lr,
        "sft_overrides": args.sft_override,
        "sft_seconds": pipe.seconds.get("sft"),
        **evaluate_record(pipe, "sft", warm),
        "eval_seconds": pipe.seconds.get("eval_sft"),
        "total_minutes": (time.perf_counter() - start) / 60,
    }
    append_jsonl(Path(args.out) / "tries.jsonl", record)
    return record


def run_rl(args: argparse.Namespace) -> list[dict]:
    """RL variants × seeds from one try's base, each evaluated on every view."""
    s = settings_from(args)
    pipe = DigitsPipeline(Path(args.out) / "tries" / args.name, s, size_args(args))
    warm = pipe.warm_start
    out = []
    for seed in [int(x) for x in args.seeds.split(",")]:
        for variant in args.variants.split(","):
            start = time.perf_counter()
            model = pipe.rl(variant, seed, start=warm)
            record = {
                "kind": "rl",
                "base": args.name,
                "variant": variant,
                "rl_tag": s.rl_tag,
                "seed": seed,
                "settings": {k: v for k, v in asdict(s).items() if k != "transforms"},
                **evaluate_record(pipe, pipe.run_name(variant, seed), model),
                "minutes": (time.perf_counter() - start) / 60,
            }
            append_jsonl(Path(args.out) / "rl.jsonl", record)
            out.append(record)
            acc, trans = record["accuracy"][IDENTITY], record["transformed"]["value"]
            print(f"{variant} seed {seed}: accuracy original {acc:.3f}, transformed {trans:.3f}", flush=True)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("try", "rl", "report"))
    p.add_argument("--out", default="bench_out/invariance_gap", help="output folder (tries/, tries.jsonl, rl.jsonl)")
    p.add_argument("--name", default="t1", help="the try (base) to build, or to run RL from")
    p.add_argument("--size", default="default", help="tiny model's named size (verl_ext/cpu/tiny_qwen25vl.py)")
    for name in SIZE_FIELDS:
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None, help=f"override the size's {name}")
    p.add_argument("--sft-steps", type=int, default=400)
    p.add_argument("--sft-batch", type=int, default=16)
    p.add_argument("--sft-lr", type=float, default=3e-3)
    p.add_argument("--sft-override", action="append", default=[], help="a verl SFT key=value (repeatable)")
    p.add_argument("--eval-limit", type=int, default=0, help="evaluate the first N test rows (0: all 323)")
    p.add_argument("--variants", default="grpo,grpo_da,dc,dc_dr")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--rl-steps", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--dc-weight", type=float, default=1.0)
    p.add_argument("--eval-batch", type=int, default=16, help="evaluation batch size (prompts per generate call)")
    p.add_argument("--rl-override", action="append", default=[], help="a Hydra key=value for every RL run (repeatable)")
    p.add_argument(
        "--rl-tag",
        default="",
        help="names the RL settings (runs' folders, the table's groups); required with --rl-override",
    )
    p.add_argument("--write-results", action="store_true", help="report: write RESULTS.md's invariance_gap section")
    return p


def main(argv: list[str] | None = None) -> None:
    demo_pipeline.exit_on_sigterm()
    args = build_parser().parse_args(argv)
    if args.command == "try":
        print(json.dumps(run_try(args), indent=1))
    elif args.command == "rl":
        run_rl(args)
    else:
        from bench.invariance_gap_report import report

        report(Path(args.out), write=args.write_results)


if __name__ == "__main__":
    main()
