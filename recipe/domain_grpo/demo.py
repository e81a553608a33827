"""`make demo`: GRPO and Domain-Aware GRPO on CPU from a base that reads turned digits worse than upright ones.

1. Converts scikit-learn's real handwritten digits (0, 1, 3, 4, 7, 8; shipped offline) to verl parquet
   (`python -m data_prep digits`: seeded 70/30 split, the square's 8 symmetries whitelisted on every row).
2. The base: the tiny Qwen2.5-VL after verl's own SFT trainer on the UPRIGHT train images only, shipped in
   `recipe/domain_grpo/assets/digits_upright_base/` (its files and the train split it was trained on are checked
   against its `provenance.json` first: `recipe/domain_grpo/digits_base.py`). `--build-base` builds it here instead
   (verl's SFT trainer, 320 steps of 16: ~5 min idle, ~16 min loaded) and says whether it is bit-identical to the
   shipped one.
3. Evaluates the base on held-out digits under all 8 views (`python -m verl_ext.evaluation`): its invariance gap,
   original-view accuracy minus the mean of the 7 transformed views, with a 95% bootstrap interval over images.
4. From the base, same seed and data, upright train images only: plain `grpo` and `dc_dr` (DC λ = 1 + DR) through
   verl's loop (`examples/run_tiny_cpu.sh`, CPU stand-ins) with the task's exact-match reward; each evaluated like
   the base.
5. Writes `<out>/demo.png` (training curves, held-out JS and agreement, accuracy per view), `<out>/summary.json`,
   `<out>/summary.md`, and prints the table: every model's gap, and dc_dr against grpo paired on the same held-out
   images (95% bootstrap intervals over images; one seed, so no seed spread: `bench/bench_invariance_gap.py`).

    python -m recipe.domain_grpo.demo [--out demo_out] [--steps 16] [--dc-weight 1] [--eval-limit 120] [--build-base]

Steps already done with the same settings and inputs are skipped on a rerun (`<out>/.done/`). A measurement on a toy
model: the same seed gives the same numbers on one machine (the CPU stand-in runs deterministically), another machine
or library build may differ in the last digits.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from recipe.common.runs import read_metrics
from recipe.domain_grpo.demo_pipeline import VARIANTS, Settings, StepError, exit_on_sigterm
from recipe.domain_grpo.demo_report import (
    gap_table,
    headline,
    markdown_table,
    paired_runs,
    paired_table,
    plot_demo,
    summary,
)
from recipe.domain_grpo.digits_base import (
    BASE_SFT,
    SHIPPED_BASE,
    DigitsPipeline,
    check_shipped_base,
    compare_with_shipped,
)
from verl_ext.evaluation.runner import write_json_atomic, write_text_atomic
from verl_ext.evaluation.view_gap import gap_record

REPO = Path(__file__).resolve().parents[2]
RUNS = ("grpo", "dc_dr")
# `make demo`'s sizes: the bench's RL settings (bench/RESULTS.md "Invariance gap", `default` rows), 120 held-out images
DEMO = Settings(eval_limit=120, **BASE_SFT)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    """The demo's command line (defaults: the `make demo` sizes)."""
    d = DEMO
    p = argparse.ArgumentParser(prog="python -m recipe.domain_grpo.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "demo_out"), help="work folder (data, runs, evaluations, PNG)")
    p.add_argument("--steps", type=int, default=d.rl_steps, help="RL steps of each run")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="prompts per RL step")
    p.add_argument("--n", type=int, default=d.n, help="responses per prompt (GRPO group)")
    p.add_argument("--lr", type=float, default=d.lr, help="RL learning rate")
    p.add_argument("--dc-weight", type=float, default=d.dc_weight, help="λ of the DC term (domain.constraint.weight)")
    p.add_argument("--seed", type=int, default=d.seed, help="rollout / transform seed of both runs")
    p.add_argument("--eval-limit", type=int, default=d.eval_limit, help="held-out rows evaluated (0: all 323)")
    p.add_argument(
        "--build-base",
        action="store_true",
        help="build the base here with verl's SFT trainer instead of using the shipped one",
    )
    p.add_argument("--sft-steps", type=int, default=None, help=f"with --build-base: SFT steps ({d.sft_steps})")
    p.add_argument("--sft-batch", type=int, default=None, help=f"with --build-base: SFT batch size ({d.sft_batch})")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the parsed command line."""
    return dataclasses.replace(
        DEMO,
        rl_steps=args.steps,
        sft_steps=args.sft_steps or DEMO.sft_steps,
        sft_batch=args.sft_batch or DEMO.sft_batch,
        batch_size=args.batch_size,
        n=args.n,
        lr=args.lr,
        dc_weight=args.dc_weight,
        seed=args.seed,
        eval_limit=args.eval_limit or None,
    )


def base_model(pipe: DigitsPipeline, build: bool) -> tuple[Path, str]:
    """(the base's HF folder, one line on where it comes from): the shipped one once checked, or one built here."""
    if not build:
        record = check_shipped_base(SHIPPED_BASE, pipe.train_parquet)
        shipped = record["held_out_when_shipped"]
        steps = record.get("sft", {}).get("sft_steps", "?")
        return SHIPPED_BASE, (
            f"shipped base {SHIPPED_BASE.relative_to(REPO)} (files and train split match its provenance; "
            f"{steps} SFT steps; gap when shipped {shipped['gap'][0]:+.3f} on {shipped.get('images', '?')} images)"
        )
    pipe.build_model()
    built = pipe.sft_warm_start()
    same = {True: "bit-identical to", False: "different from (another machine or settings)", None: "no provenance of"}
    return built, (
        f"base built here ({pipe.s.sft_steps} SFT steps of {pipe.s.sft_batch}): "
        f"{same[compare_with_shipped(built)]} the shipped one"
    )


def run_demo(out: Path, settings: Settings, build_base: bool = False) -> dict:
    """Every step of the demo; returns the summary (also written to `<out>/summary.json`)."""
    started = time.monotonic()
    pipe = DigitsPipeline(out, settings)
    pipe.prepare_data()
    base, origin = base_model(pipe, build_base)
    print(f"[demo] {origin}", flush=True)
    models = {"base": summary(pipe.evaluate("base", base))}
    gaps = {"base": gap_record(out / "eval" / "base" / "predictions.jsonl")}
    g = gaps["base"]["gap"]
    print(
        f"[demo] base: held-out accuracy {gaps['base']['accuracy']['identity']:.3f} upright, "
        f"{gaps['base']['transformed']['value']:.3f} on the 7 other views: gap {g['value']:+.3f} "
        f"[{g['ci_low']:+.3f}, {g['ci_high']:+.3f}]",
        flush=True,
    )
    train = {}
    for variant in RUNS:
        trained = pipe.rl(variant, settings.seed, start=base)
        name = pipe.run_name(variant, settings.seed)
        models[variant] = summary(pipe.evaluate(name, trained))
        gaps[variant] = gap_record(out / "eval" / name / "predictions.jsonl")
        train[variant] = read_metrics(pipe.run_dir(variant, settings.seed) / "metrics.jsonl")
    labels = {"base": "upright-SFT base"}
    labels |= {v: f"{VARIANTS[v]['label']} ({settings.rl_steps} steps)" for v in RUNS}
    title = (
        "Tiny Qwen2.5-VL on real handwritten digits (scikit-learn), CPU: base SFT-trained on upright digits → "
        f"GRPO vs GRPO + DC (λ={settings.dc_weight:g}) + DR, {settings.rl_steps} RL steps on upright digits, "
        f"seed {settings.seed}"
    )
    evals = {v: out / "eval" / pipe.run_name(v, settings.seed) for v in RUNS}
    paired = paired_runs(evals["grpo"], evals["dc_dr"])  # same images, same seed: per-image pairs
    js = paired["js"]
    interval = ("dc_dr", js["base"] * js["ratio_low"], js["base"] * js["ratio_high"])
    png = plot_demo(out / "demo.png", models, train, labels, title, js_interval=interval, gaps=gaps)
    table = "\n\n".join(
        [
            headline(gaps["base"], paired, "dc_dr", "grpo"),
            markdown_table(models, labels, reference="grpo"),
            gap_table(gaps, labels),
            paired_table(paired, "grpo", "dc_dr"),
        ]
    )
    seconds = round(time.monotonic() - started, 1)
    result = {
        "settings": dataclasses.asdict(settings),
        "base": origin,
        "models": models,
        "gaps": {name: {k: v for k, v in rec.items() if not k.startswith("per_image")} for name, rec in gaps.items()},
        "js_ratio_dc_dr_over_grpo": models["dc_dr"]["js"] / models["grpo"]["js"],
        "paired_dc_dr_vs_grpo": paired,
        "step_seconds": pipe.seconds,
        "seconds": seconds,
        "png": str(png),
    }
    write_json_atomic(out / "summary.json", result)
    write_text_atomic(out / "summary.md", table + "\n")
    print(f"\n[demo] {png}; {out / 'summary.json'}; whole demo {seconds / 60:.1f} min\n", flush=True)
    print(table, flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; a failed step (or a base that does not match its provenance) exits 1 with one line."""
    args = build_parser().parse_args(argv)
    exit_on_sigterm()
    if not args.build_base and (args.sft_steps is not None or args.sft_batch is not None):
        print(
            "error: --sft-steps/--sft-batch size the base that --build-base builds; add --build-base", file=sys.stderr
        )
        return 2
    for name in ("steps", "sft_steps", "sft_batch", "batch_size", "n"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    try:
        run_demo(Path(args.out).resolve(), settings_from(args), build_base=args.build_base)
    except StepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
