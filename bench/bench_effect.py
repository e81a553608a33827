"""The effect of the domain terms on held-out cross-view consistency, over seeds, on CPU: grpo vs the answer-span
variants (dc_ans, dr_ans, dc_dr_ans) and dc_dr over the whole response (the scope's control).

The first demo's comparison (before `make demo` moved to the digits base with a gap) over seeds: ONE shared warm start
(the tiny Qwen2.5-VL after verl's SFT trainer on the demo-rs train tiles, built once), then for every seed and variant
an RL run through verl's loop (`examples/run_tiny_cpu.sh`, `stand_in=cpu_tiny`: deterministic; same data order, seed =
rollout seed + transform seed) with the real task's exact-match reward, then the evaluation CLI on the held-out tiles
under the 7 non-identity symmetries of the square. Reports mean ± std over seeds (sample std) of held-out accuracy per
view, answer agreement and cross-view JS, each variant's held-out JS over GRPO's per seed, and a paired 95% interval
against GRPO per number: items (seed, held-out image), resampled by image (`verl_ext/evaluation/paired.py`).

A measurement, not a test: nothing here asserts an effect. Runs are resumable (`<work>/.done/`).

    python bench/bench_effect.py --work /work/bench_effect_out --seeds 0,1,2 --out bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.results_file import replace_section  # noqa: E402
from recipe.common.runs import read_metrics  # noqa: E402
from recipe.domain_grpo.demo_pipeline import VARIANTS, Pipeline, Settings, exit_on_sigterm  # noqa: E402
from recipe.domain_grpo.demo_report import summary  # noqa: E402
from verl_ext.evaluation.paired import IMAGE_METRICS, image_values, paired_comparison, per_seed_delta, read_predictions  # noqa: E402
from verl_ext.evaluation.runner import write_json_atomic  # noqa: E402
from verl_ext.stats import separation  # noqa: E402

# grpo, the three answer-span variants, and dc_dr over the whole response (the control of the scope)
ORDER = ("grpo", "dc_dr_ans", "dr_ans", "dc_ans", "dc_dr")
# verl training metrics averaged over seeds per step (the side-by-side curves)
CURVE_KEYS = (
    "critic/score/mean",
    "domain/js_mean",
    "domain/empty_scope_count",
    "actor/domain_loss",
    "actor/domain_divergence_token_mean",
)
# the run-mean table: the curves' metrics plus the largest D_i of a step and how far DR moved an advantage
RUN_MEAN_KEYS = (*CURVE_KEYS, "domain/js_max", "domain/advantage_abs_change_max")


def curves(train: Mapping[int, Mapping[int, Mapping[str, float]]]) -> dict[str, dict[int, list[float]]]:
    """{metric: {step: [value per seed]}} from {seed: {step: verl metrics}}."""
    out: dict[str, dict[int, list[float]]] = {}
    for key in CURVE_KEYS:
        per_step: dict[int, list[float]] = {}
        for steps in train.values():
            for step, values in steps.items():
                if key in values:
                    per_step.setdefault(int(step), []).append(float(values[key]))
        if per_step:
            out[key] = dict(sorted(per_step.items()))
    return out


def plot_curves(path: Path, all_curves: Mapping[str, Mapping[str, Mapping[int, list[float]]]], title: str) -> None:
    """One panel per `CURVE_KEYS` metric: mean over seeds per step, ± std shaded, one line per variant."""
    from verl_ext.evaluation.plots import pyplot, save_figure_atomic

    plt = pyplot()
    fig, axes = plt.subplots(1, len(CURVE_KEYS), figsize=(4 * len(CURVE_KEYS), 4))
    for ax, key in zip(axes, CURVE_KEYS):
        for i, (variant, c) in enumerate(all_curves.items()):
            if key not in c:
                continue
            xs = list(c[key])
            stats = [mean_std(c[key][x]) for x in xs]
            ys, ss = [m for m, _ in stats], [s for _, s in stats]
            ax.plot(xs, ys, label=variant, color=f"C{i}")
            ax.fill_between(xs, [y - s for y, s in zip(ys, ss)], [y + s for y, s in zip(ys, ss)], alpha=0.15)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure_atomic(fig, path)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def pm(values: Sequence[float], digits: int = 3, sci: bool = False) -> str:
    """`mean ± std` of `values`."""
    m, s = mean_std(values)
    return f"{m:.3g} ± {s:.2g}" if sci else f"{m:.{digits}f} ± {s:.{digits}f}"


def aggregate(runs: Mapping[str, Mapping[int, Mapping]], variants: Sequence[str]) -> dict:
    """Per variant: lists over seeds of each held-out number, and the JS ratio to GRPO per seed."""
    out = {}
    for v in variants:
        seeds = sorted(runs[v])
        rows = [runs[v][s] for s in seeds]
        entry = {
            "seeds": seeds,
            "js": [r["js"] for r in rows],
            "agreement": [r["agreement"] for r in rows],
            "accuracy": [r["accuracy"] for r in rows],
            "accuracy_transformed": [r["accuracy_transformed"] for r in rows],
            "accuracy_per_view": {
                view: [r["accuracy_per_view"][view] for r in rows] for view in rows[0]["accuracy_per_view"]
            },
            "train_reward_last": [r["train_reward_last"] for r in rows],
        }
        if "grpo" in runs:
            entry["js_over_grpo"] = [runs[v][s]["js"] / runs["grpo"][s]["js"] for s in seeds if s in runs["grpo"]]
        out[v] = entry
    return out


def paired(images: Mapping[str, Mapping[int, Mapping]], variants: Sequence[str], base: str = "grpo") -> dict:
    """{variant: {metric: paired_comparison vs `base` + its per-seed deltas}} for every variant but `base`."""
    out: dict[str, dict] = {}
    if base not in images:
        return out
    for v in variants:
        if v == base or not images.get(v):
            continue
        out[v] = {}
        for metric in IMAGE_METRICS:
            entry = paired_comparison(images[base], images[v], metric)
            entry["per_seed_delta"] = per_seed_delta(images[base], images[v], metric)
            out[v][metric] = entry
    return out


def _ci(e: Mapping, key: str, fmt: str = "+.3f") -> str:
    """`value [low, high]` of a paired_comparison entry (`key`: delta or ratio); bold when it excludes 0 (or 1)."""
    value, lo, hi = e[key], e[f"{key}_low"], e[f"{key}_high"]
    null = 0.0 if key == "delta" else 1.0
    cell = f"{value:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"
    return f"**{cell}**" if separation(lo, hi, null) else cell


def markdown(result: Mapping) -> str:
    """The RESULTS.md section body."""
    st, agg, warm = result["settings"], result["aggregate"], result["warm_start"]
    variants = list(agg)
    seeds = ",".join(map(str, result["seeds"]))
    lines = [
        "**On a tiny CPU model this checks the machinery; it shows an effect only where a paired interval below "
        "excludes zero (bold).**",
        "",
        f"`python bench/bench_effect.py --work /work/bench_effect_out --seeds {seeds} --out bench/RESULTS.md` "
        f"({result['machine']}, shared with other jobs; per run {pm(result['step_minutes']['rl'], 1)} min of RL and "
        f"{pm(result['step_minutes']['eval'], 1)} min of evaluation, the steps' wall times). One "
        f"shared warm start: the tiny Qwen2.5-VL after {st['sft_steps']} steps of verl's SFT trainer (batch "
        f"{st['sft_batch']}) on the demo-rs train tiles; from it, per seed and variant, {st['rl_steps']} RL steps "
        f"through verl's loop on CPU, deterministic (`stand_in=cpu_tiny`; {st['batch_size']} prompts x n={st['n']}, "
        f"lr {st['lr']:g}, DC λ={st['dc_weight']:g} where DC is on, exact-match reward, transforms rot90/180/270), "
        f"then the evaluation CLI on {warm['rows']} held-out tiles under the 7 non-identity symmetries of the square. "
        "`*_ans`: the term(s) only over the tokens inside `<answer>…</answer>` (`domain.constraint.scope=answer`, "
        "`domain.shaping.scope=answer`); `dc_dr`: over the whole response (the control). JS in bits on the answer "
        "distribution (teacher-forced on the original view's response), agreement = same valid answer as on the "
        "original view.",
        "",
        f"Warm start (before RL): accuracy {warm['accuracy']:.3f} (transforms {warm['accuracy_transformed']:.3f}), "
        f"agreement {warm['agreement']:.3f}, held-out JS {warm['js']:.3g} (random tiny model: "
        f"{result['random']['js']:.3g}).",
        "",
        "Mean ± sample std over seeds (one number per run):",
        "",
        "| variant | held-out JS | JS / GRPO (same seed) | agreement | acc (original) | acc (7 transforms) "
        "| last training reward |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        a = agg[v]
        ratio = pm(a["js_over_grpo"]) if a.get("js_over_grpo") and v != "grpo" else "1"
        lines.append(
            f"| {v} | {pm(a['js'], sci=True)} | {ratio} | {pm(a['agreement'])} | {pm(a['accuracy'])} "
            f"| {pm(a['accuracy_transformed'])} | {pm(a['train_reward_last'])} |"
        )
    pairs = result.get("paired", {})
    if pairs:
        n = next(iter(next(iter(pairs.values())).values()))
        lines += [
            "",
            f"Paired against GRPO: variant − grpo over the {n['n_items']} (seed, held-out image) items both have, "
            f"95% percentile bootstrap over the {n['n_images']} images (an image's items over seeds drawn together, "
            "both arms with the same draw; `verl_ext/evaluation/paired.py`, "
            "`verl_ext.stats.paired_cluster_bootstrap`). "
            "The interval conditions on these seeds' runs; the per-seed deltas show the seed spread.",
            "",
            "| variant | Δ held-out JS | JS ratio to GRPO | Δ agreement | Δ acc (original) | Δ acc (transforms) "
            "| Δ JS per seed |",
            "|---|---|---|---|---|---|---|",
        ]
        for v, e in pairs.items():
            per_seed = ", ".join(f"{d:+.1e}" for d in e["js"]["per_seed_delta"].values())
            lines.append(
                f"| {v} | {_ci(e['js'], 'delta', '+.2e')} | {_ci(e['js'], 'ratio', '.4f')} "
                f"| {_ci(e['agreement'], 'delta')} | {_ci(e['accuracy'], 'delta')} "
                f"| {_ci(e['accuracy_transformed'], 'delta')} | {per_seed} |"
            )
    views = list(agg[variants[0]]["accuracy_per_view"])
    lines += ["", "Held-out accuracy per view (mean ± std over seeds):", ""]
    lines += ["| variant | " + " | ".join(views) + " |", "|---" * (len(views) + 1) + "|"]
    warm_cells = [f"{warm['accuracy_per_view'][view]:.3f}" for view in views]
    lines.append("| warm start | " + " | ".join(warm_cells) + " |")
    for v in variants:
        cells = [pm(agg[v]["accuracy_per_view"][view], 2) for view in views]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += ["", "Training metrics (verl's, per step: mean over the run's steps, then mean ± std over seeds; "]
    lines[-1] += "curves in `bench/effect_curves.png`):"
    keys = [k for k in RUN_MEAN_KEYS if any(k in result["run_means"][v] for v in variants)]
    lines += ["", "| variant | " + " | ".join(f"`{k}`" for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for v in variants:
        cells = []
        for k in keys:
            per_seed = result["run_means"][v].get(k)
            cells.append(pm(per_seed, sci=k != "critic/score/mean") if per_seed else "–")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    per_seed = ", ".join(
        f"seed {s}: " + " / ".join(f"{v} {result['runs'][v][s]['js']:.4g}" for v in variants if s in result["runs"][v])
        for s in result["seeds"]
        if any(s in result["runs"][v] for v in variants)
    )
    lines += ["", f"Held-out JS per seed: {per_seed}."]
    return "\n".join(lines)


def step_seconds(out: Path, step: str) -> float:
    """The wall time a finished step took (its `.done` marker's `seconds`; NaN without one)."""
    marker = out / ".done" / f"{step}.json"
    return float(json.loads(marker.read_text()).get("seconds", "nan")) if marker.exists() else float("nan")


def run_means(train: Mapping[int, Mapping[int, Mapping[str, float]]]) -> dict[str, list[float]]:
    """{metric: [mean over the run's steps, per seed]} of the `RUN_MEAN_KEYS` a run logged."""
    out: dict[str, list[float]] = {}
    for seed in sorted(train):
        steps = train[seed].values()
        for key in RUN_MEAN_KEYS:
            values = [float(m[key]) for m in steps if key in m]
            if values:
                out.setdefault(key, []).append(statistics.fmean(values))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) every seed x variant, write `<work>/bench_effect.json` and optionally the RESULTS.md section."""
    d = Settings()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=str(REPO / "bench_effect_out"), help="work folder (resumable)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", default=",".join(ORDER))
    p.add_argument("--steps", type=int, default=d.rl_steps, help="RL steps per run (default: the demo's)")
    p.add_argument("--sft-steps", type=int, default=d.sft_steps)
    p.add_argument("--dc-weight", type=float, default=d.dc_weight)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--eval-limit", type=int, default=d.eval_limit, help="held-out rows (0: all 144)")
    p.add_argument("--first", default="grpo,dc_ans,dc_dr_ans", help="variants run over every seed before the rest")
    p.add_argument("--collect-only", action="store_true", help="report the runs already done, start no new one")
    p.add_argument("--out", default=None, help="bench/RESULTS.md to update (section effect)")
    args = p.parse_args(argv)
    exit_on_sigterm()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not seeds:
        print(f"error: unknown variants {unknown} (choose from {sorted(VARIANTS)}) or no seeds", file=sys.stderr)
        return 2
    settings = dataclasses.replace(
        d,
        rl_steps=args.steps,
        sft_steps=args.sft_steps,
        dc_weight=args.dc_weight,
        lr=args.lr,
        eval_limit=args.eval_limit or None,
    )
    started = time.monotonic()
    pipe = Pipeline(args.work, settings)
    pipe.prepare_data()
    pipe.build_model()
    random_pipe = Pipeline(args.work, dataclasses.replace(settings, eval_limit=8, response_length=8))
    random = summary(random_pipe.evaluate("random", pipe.base_model))
    warm = summary(pipe.evaluate("warm_start", pipe.sft_warm_start()))
    runs: dict[str, dict[int, dict]] = {v: {} for v in variants}
    images: dict[str, dict[int, dict]] = {v: {} for v in variants}
    train_logs: dict[str, dict[int, dict]] = {v: {} for v in variants}
    # the --first variants over every seed, then the others seed by seed (a cut-short bench keeps complete pairs)
    first = [v for v in variants if v in args.first.split(",")]
    plan = [(s, v) for s in seeds for v in first] + [(s, v) for s in seeds for v in variants if v not in first]
    for seed, v in plan:
        evaluated = (pipe.out / "eval" / pipe.run_name(v, seed) / "metrics.json").exists()
        if args.collect_only and (pipe.trained_model(v, seed) is None or not evaluated):
            print(f"[bench] seed {seed} {v}: not run (--collect-only)", flush=True)
            continue
        trained = pipe.rl(v, seed)
        s = summary(pipe.evaluate(pipe.run_name(v, seed), trained))
        train = read_metrics(pipe.run_dir(v, seed) / "metrics.jsonl")
        s["train_reward_last"] = train[max(train)]["critic/score/mean"]
        train_logs[v][seed] = train
        runs[v][seed] = s
        images[v][seed] = image_values(
            read_predictions(pipe.out / "eval" / pipe.run_name(v, seed) / "predictions.jsonl")
        )
        print(
            f"[bench] seed {seed} {v}: held-out JS {s['js']:.3g}, agreement {s['agreement']:.3f}, "
            f"acc {s['accuracy']:.3f}",
            flush=True,
        )
    result = {
        "settings": dataclasses.asdict(settings),
        "seeds": seeds,
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "minutes": (time.monotonic() - started) / 60,
        "step_minutes": {
            kind: [step_seconds(pipe.out, f"{kind}_{pipe.run_name(v, s)}") / 60 for v in variants for s in runs[v]]
            for kind in ("rl", "eval")
        },
        "random": random,
        "warm_start": warm,
        "runs": runs,
        "aggregate": aggregate(runs, [v for v in variants if runs[v]]),
        "paired": paired(images, [v for v in variants if runs[v]]),
        "curves": {v: curves(train_logs[v]) for v in variants if runs[v]},
        "run_means": {v: run_means(train_logs[v]) for v in variants if runs[v]},
        "images": images,
    }
    write_json_atomic(Path(args.work) / "bench_effect.json", result)
    body = markdown(result)
    print(body)
    if args.out:
        title = f"{settings.rl_steps} RL steps from one SFT warm start, seeds {seeds}, DC λ={settings.dc_weight:g}"
        plot_curves(Path(args.out).parent / "effect_curves.png", result["curves"], title)
        replace_section(
            args.out, "effect", "Effect of DC / DR on held-out cross-view consistency (CPU, tiny model)", body
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
