"""The demo's picture and table: training curves of each RL run, held-out cross-view JS and agreement before/after,
accuracy per transform (one PNG), and the same numbers as a short markdown table.

Inputs are the evaluation CLI's `metrics.json` (`verl_ext.evaluation`) of each model and verl's file-logger metrics
of each RL run; the paired comparison of two runs reads their `predictions.jsonl` (`verl_ext.evaluation.paired`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from verl_ext.evaluation.paired import IMAGE_METRICS, image_values, paired_comparison, read_predictions
from verl_ext.evaluation.plots import pyplot, save_figure_atomic
from verl_ext.stats import separation

IDENTITY = "identity"
# (verl metric key, panel title) of the training curves
TRAIN_CURVES = (
    ("critic/score/mean", "training reward (acc + format, max 2)"),
    ("domain/js_mean", "D_i on the rollouts (DR's JS, mean)"),
    ("actor/domain_loss", "DC term KL(π^D ‖ π) per token"),
)


def summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers the demo reports from one evaluation's metrics.json."""
    inv = metrics["invariance"]
    views = metrics["views"]
    return {
        "rows": metrics["n"],
        "accuracy": metrics["accuracy"],
        "accuracy_transformed": inv["mean_accuracy_transformed"],
        "agreement": inv["mean_agreement"],
        "js": inv["mean_js"],
        "accuracy_per_view": {v: views[v]["accuracy"] for v in views},
        "js_per_view": {v: views[v].get("mean_js_to_original") for v in views if v != IDENTITY},
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def markdown_table(models: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str], reference: str | None) -> str:
    """Held-out numbers per model (summaries from `summary`), with the JS ratio to `reference` (GRPO)."""
    ref_js = models[reference]["js"] if reference in models else None
    lines = [
        "| model | rows | acc (original) | acc (7 transforms) | agreement | cross-view JS (bits) | JS / GRPO |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in models.items():
        ratio = s["js"] / ref_js if ref_js and name != "random" else None
        cells = [labels.get(name, name), str(s["rows"]), _fmt(s["accuracy"]), _fmt(s["accuracy_transformed"])]
        cells += [_fmt(s["agreement"]), f"{s['js']:.3g}", _fmt(ratio)]
        lines.append("| " + " | ".join(cells) + " |")
    views = list(next(iter(models.values()))["accuracy_per_view"])
    lines += ["", "Accuracy per view (held-out):", "", "| model | " + " | ".join(views) + " |"]
    lines.append("|---" * (len(views) + 1) + "|")
    for name, s in models.items():
        cells = [_fmt(s["accuracy_per_view"][v]) for v in views]
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gap_table(gaps: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str]) -> str:
    """The invariance gap of each model as markdown: original-view accuracy, the 7 other views' mean and their
    difference, with 95% bootstrap intervals over images (records of `verl_ext.evaluation.view_gap.gap_record`)."""
    lines = [
        "Invariance gap (held-out accuracy on the original view minus the mean over the 7 other views; 95% percentile "
        "bootstrap over images, an image's 8 views paired):",
        "",
        "| model | images | acc (original) | acc (7 other views) [95% CI] | gap [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for name, g in gaps.items():
        t, gap = g["transformed"], g["gap"]
        cells = [labels.get(name, name), str(g["n_images"]), _fmt(g["accuracy"][IDENTITY])]
        cells += [f"{t['value']:.3f} [{t['ci_low']:.3f}, {t['ci_high']:.3f}]"]
        cells += [f"{gap['value']:+.3f} [{gap['ci_low']:+.3f}, {gap['ci_high']:+.3f}]"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _side(low: float, high: float, null: float) -> str:
    if math.isnan(low) or math.isnan(high):
        return "no interval"
    return f"{'excludes' if separation(low, high, null) else 'contains'} {null:g}"


def headline(gap: Mapping[str, Any], paired: Mapping[str, Mapping[str, float]], arm: str, reference: str) -> str:
    """The demo's first line: what its intervals show and what they leave open (one seed on a tiny CPU model: a
    check of the machinery wherever an interval contains no change).

    Args:
        gap: the base's `gap_record` (its "gap": value and interval).
        paired: `paired_runs(reference, arm)`.
    """
    g, js, acc = gap["gap"], paired["js"], paired["accuracy_transformed"]
    return (
        f"Tiny CPU model, one seed: a check of the machinery wherever an interval contains no change. The base's "
        f"invariance gap is {g['value']:+.3f} [{g['ci_low']:+.3f}, {g['ci_high']:+.3f}] "
        f"({_side(g['ci_low'], g['ci_high'], 0.0)}). Against {reference} on the same {js['n_images']} held-out "
        f"images, {arm}'s cross-view JS is {js['ratio']:.3g} x [{js['ratio_low']:.3g}, {js['ratio_high']:.3g}] "
        f"({_side(js['ratio_low'], js['ratio_high'], 1.0)}) and its accuracy on the 7 other views changes by "
        f"{acc['delta']:+.3f} [{acc['delta_low']:+.3f}, {acc['delta_high']:+.3f}] "
        f"({_side(acc['delta_low'], acc['delta_high'], 0.0)})."
    )


def paired_runs(reference_eval: Path, arm_eval: Path) -> dict[str, dict[str, float]]:
    """{metric: `paired_comparison` of the arm against the reference} over the held-out images both evaluations have
    (folders of the evaluation CLI: their `predictions.jsonl`), 95% percentile bootstrap over images."""
    base = {0: image_values(read_predictions(Path(reference_eval) / "predictions.jsonl"))}
    arm = {0: image_values(read_predictions(Path(arm_eval) / "predictions.jsonl"))}
    return {metric: paired_comparison(base, arm, metric) for metric in IMAGE_METRICS}


PAIRED_LABELS = {
    "accuracy": "accuracy (original view)",
    "accuracy_transformed": "accuracy (7 transforms)",
    "agreement": "agreement with the original view",
    "js": "cross-view JS (bits)",
}


def paired_table(paired: Mapping[str, Mapping[str, float]], reference: str, arm: str) -> str:
    """The paired comparison as markdown: per metric, both means, arm − reference and arm / reference with their
    95% intervals (bootstrap over the held-out images)."""
    first = next(iter(paired.values()))
    lines = [
        f"Paired on the same {first['n_images']} held-out images (same seed and data order; 95% percentile bootstrap "
        "over images; one seed, so the seed-to-seed spread is not in it: `bench/bench_invariance_gap.py` repeats it "
        "over seeds):",
        "",
        f"| metric | {reference} | {arm} | {arm} − {reference} [95% CI] | {arm} / {reference} [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for metric, r in paired.items():
        delta = f"{r['delta']:+.3g} [{r['delta_low']:+.3g}, {r['delta_high']:+.3g}]"
        ratio = f"{r['ratio']:.3g} [{r['ratio_low']:.3g}, {r['ratio_high']:.3g}]"
        lines.append(f"| {PAIRED_LABELS.get(metric, metric)} | {r['base']:.3g} | {r['arm']:.3g} | {delta} | {ratio} |")
    return "\n".join(lines)


def plot_demo(
    path: str | Path,
    models: Mapping[str, Mapping[str, Any]],
    train: Mapping[str, Mapping[int, Mapping[str, float]]],
    labels: Mapping[str, str],
    title: str,
    js_interval: tuple[str, float, float] | None = None,
    gaps: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """One PNG: 3 training-curve panels (one line per RL run), held-out JS and agreement per model, accuracy per view.

    Args:
        models: {name: summary} in display order (e.g. random, warm start, grpo, dc_dr).
        train: {run name: {step: verl metrics}}.
        js_interval: (model, low, high) drawn as an error bar on that model's held-out JS bar (the demo: GRPO's JS
            times the 95% interval of the paired ratio dc_dr / grpo).
        gaps: {name: `gap_record`} (optional): each model's invariance gap and its interval in the accuracy panel's
            legend.

    Note:
        The JS panel is on a log scale only when the models' JS spans more than two decades (a random model's float
        noise next to a trained one's); otherwise linear from 0, so bar heights compare as ratios.
    """
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    colors = {name: f"C{i}" for i, name in enumerate(models)}
    for ax, (key, panel) in zip(axes[0], TRAIN_CURVES):
        drawn = False
        for run, steps in train.items():
            xs = [s for s in sorted(steps) if key in steps[s]]
            if xs:
                ys = [steps[s][key] for s in xs]
                ax.plot(xs, ys, marker="o", ms=3, label=labels.get(run, run), color=colors[run])
                drawn = True
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged by these runs", ha="center", transform=ax.transAxes)
    names = list(models)
    ax = axes[1, 0]
    js = [models[n]["js"] for n in names]
    ax.bar(range(len(names)), js, color=[colors[n] for n in names])
    if max(js) > 100 * max(min(js), 1e-30):
        ax.set_yscale("log")
    ax.set_xticks(range(len(names)), [labels.get(n, n) for n in names], rotation=15, fontsize=8)
    suffix = "; bar: 95% CI of the ratio to GRPO" if js_interval is not None else ""
    ax.set_title(f"held-out cross-view JS (bits, mean over 7 transforms{suffix})", fontsize=10)
    for i, v in enumerate(js):
        ax.text(i, v, f"{v:.2g}", ha="center", va="bottom", fontsize=8)
    if js_interval is not None and js_interval[0] in names:
        i, (_, low, high) = names.index(js_interval[0]), js_interval
        ax.errorbar([i], [js[i]], yerr=[[js[i] - low], [high - js[i]]], color="k", capsize=4, lw=1)
    ax = axes[1, 1]
    agree = [models[n]["agreement"] for n in names]
    ax.bar(range(len(names)), agree, color=[colors[n] for n in names])
    ax.set_ylim(0, 1.05)
    ax.set_xticks(range(len(names)), [labels.get(n, n) for n in names], rotation=15, fontsize=8)
    ax.set_title("held-out answer agreement with the original view", fontsize=10)
    for i, v in enumerate(agree):
        ax.text(i, v, _fmt(v), ha="center", va="bottom", fontsize=8)
    ax = axes[1, 2]
    views = list(models[names[0]]["accuracy_per_view"])
    width = 0.8 / len(names)
    for k, n in enumerate(names):
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(views))]
        label = labels.get(n, n)
        if gaps is not None and n in gaps:
            g = gaps[n]["gap"]
            label += f"; gap {g['value']:+.2f} [{g['ci_low']:+.2f}, {g['ci_high']:+.2f}]"
        ax.bar(xs, [models[n]["accuracy_per_view"][v] for v in views], width, label=label, color=colors[n])
    ax.set_xticks(range(len(views)), views, rotation=30, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title("held-out accuracy per view", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure_atomic(fig, path)


def ordered(names: Sequence[str], available: Mapping[str, Any]) -> list[str]:
    """`names` that are in `available`, in order."""
    return [n for n in names if n in available]
