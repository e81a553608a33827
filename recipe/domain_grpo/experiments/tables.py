"""Collect the matrix's evaluation JSONs into paper-style markdown tables and an accuracy-vs-shots plot.

Tables (accuracy in %, mean over seeds, "± std" when there are several seeds):
- Tables 2/3 style: one table per domain and shot; rows = methods, columns = datasets + Avg;
- Table 7 style: UCM ablation (GRPO, +OC, +DC, +DR, DC+DR, SFT+DA, GRPO+DA) × shots;
- Table 8 style: UCM divergence ablation of DC-DR (KL-KL, JS-JS, JS-KL, KL-JS = the method) × shots;
- invariance (no paper reports it): accuracy on the transformed views, cross-view agreement, answer-distribution JS.
Where the paper reports a number for a row of ours, a row labelled "(paper)" follows it (see `paper_numbers`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recipe.domain_grpo.experiments import paper_numbers as P
from recipe.domain_grpo.experiments.matrix import CELL_FILE, METHODS, METRICS_FILE

METHOD_LABELS = {
    "zero_shot": "Zero-shot",
    "prompt_injection": "Prompt injection",
    "sft": "SFT",
    "sft_da": "SFT+DA",
    "grpo": "GRPO (Visual-RFT)",
    "grpo_da": "GRPO+DA",
    "oc": "GRPO+OC",
    "dc": "GRPO+DC",
    "dr": "GRPO+DR",
    "dc_dr": "Ours: DC+DR (KL-JS)",
    "kl_kl": "DC-DR KL-KL",
    "js_js": "DC-DR JS-JS",
    "js_kl": "DC-DR JS-KL",
}
DATASET_ORDER = [d for domain in P.PAPER_DOMAIN_DATASETS.values() for d in domain]
DATASET_DOMAINS = {d: dom for dom, ds in P.PAPER_DOMAIN_DATASETS.items() for d in ds}
_PATH_RE = re.compile(r"(?P<method>[^/]+)/(?P<dataset>[^/]+)/(?P<shot>\d+)shot/seed(?P<seed>\d+)/eval/metrics\.json$")
DASH = "–"


@dataclass
class Result:
    """One finished cell: where it sits in the matrix and its metrics.json."""

    method: str
    dataset: str
    domain: str
    shot: int
    seed: int
    metrics: dict[str, Any]


def collect_results(runs_dir: str | Path) -> list[Result]:
    """Every finished cell under `runs_dir`: from cell.json files, else from the path layout
    <method>/<dataset>/<k>shot/seed<s>/eval/metrics.json (the matrix's default run_dir)."""
    runs = Path(runs_dir)
    found: dict[Path, Result] = {}
    for cell_file in sorted(runs.rglob(CELL_FILE)):
        cell = json.loads(cell_file.read_text())
        metrics_path = (cell_file.parent / cell.get("eval_dir", "eval") / METRICS_FILE).resolve()
        if metrics_path.exists():
            metrics = json.loads(metrics_path.read_text())
            domain = cell.get("domain") or _domain_of(cell["dataset"], metrics)
            found[metrics_path] = Result(
                cell["method"], cell["dataset"], domain, int(cell["shot"]), int(cell["seed"]), metrics
            )
    for metrics_path in sorted(runs.rglob(METRICS_FILE)):
        match = _PATH_RE.search(metrics_path.relative_to(runs).as_posix())
        if match and metrics_path.resolve() not in found:
            metrics = json.loads(metrics_path.read_text())
            d = match.groupdict()
            domain = _domain_of(d["dataset"], metrics)
            found[metrics_path.resolve()] = Result(
                d["method"], d["dataset"], domain, int(d["shot"]), int(d["seed"]), metrics
            )
    return sorted(found.values(), key=lambda r: (_method_rank(r.method), r.dataset, r.shot, r.seed))


def _domain_of(dataset: str, metrics: dict[str, Any]) -> str:
    """The domain from metrics.json's "domain", else the paper's dataset lists, else "other"."""
    return metrics.get("domain") or DATASET_DOMAINS.get(dataset, "other")


def _method_rank(method: str) -> int:
    return METHODS.index(method) if method in METHODS else len(METHODS)


def _domain_rank(domain: str) -> tuple[int, str]:
    """The paper's domains first, in its order (remote sensing, medical), then others by name."""
    order = list(P.PAPER_DOMAIN_DATASETS)
    return (order.index(domain) if domain in order else len(order), domain)


def _dataset_rank(dataset: str) -> tuple[int, str]:
    return (DATASET_ORDER.index(dataset) if dataset in DATASET_ORDER else len(DATASET_ORDER), dataset)


def accuracy_pct(metrics: dict[str, Any]) -> float | None:
    """Original-view accuracy in % (None if missing)."""
    value = metrics.get("accuracy")
    return None if value is None else 100.0 * float(value)


def cell_stats(
    results: Sequence[Result], method: str, dataset: str, shot: int, value: Callable[[dict], float | None]
) -> tuple[float, float, int] | None:
    """(mean, std, n seeds) of `value(metrics)` over the seeds of one cell; shot-independent cells match any shot."""
    vals = [
        v
        for r in results
        if r.method == method and r.dataset == dataset and r.shot in (shot, 0)
        for v in [value(r.metrics)]
        if v is not None
    ]
    if not vals:
        return None
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return mean, std, len(vals)


def fmt(stats: tuple[float, float, int] | None, digits: int = 1) -> str:
    """ "12.3", "12.3 ± 0.4" (several seeds), or a dash."""
    if stats is None:
        return DASH
    mean, std, n = stats
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 else "")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _shots(results: Sequence[Result]) -> list[int]:
    """Non-zero shots present in the results."""
    return sorted({r.shot for r in results if r.shot})


def main_table(results: Sequence[Result], domain: str, shot: int) -> str:
    """Tables 2/3 style: rows = methods, columns = the domain's datasets + Avg, at one shot."""
    dom = [r for r in results if r.domain == domain and r.shot in (shot, 0)]
    datasets = sorted({r.dataset for r in dom}, key=_dataset_rank)
    methods = sorted({r.method for r in dom}, key=_method_rank)
    rows = []
    for method in methods:
        stats = [cell_stats(dom, method, d, shot, accuracy_pct) for d in datasets]
        present = [s[0] for s in stats if s is not None]
        avg = f"{sum(present) / len(present):.1f}" + ("*" if len(present) < len(datasets) else "") if present else DASH
        rows.append([METHOD_LABELS.get(method, method), *map(fmt, stats), avg])
        paper = P.paper_domain_average(domain, method, shot)
        if paper is not None:
            rows.append([f"{METHOD_LABELS.get(method, method)} (paper)", *[DASH] * len(datasets), f"{paper:.1f}"])
    title = f"### {domain}, {shot}-shot: accuracy (%)"
    return f"{title}\n\n{_table(['method', *datasets, 'Avg'], rows)}"


def ablation_table(results: Sequence[Result], methods: Sequence[str], title: str, dataset: str = "ucm") -> str:
    """Tables 7/8 style on one dataset: rows = methods, columns = shots; paper rows from the UCM ablations."""
    ours = [r for r in results if r.dataset == dataset]
    shots = sorted(set(_shots(ours)) | (set(P.PAPER_SHOTS) if dataset == "ucm" else set()))
    rows = []
    for method in methods:
        if not any(r.method == method for r in ours):
            continue
        label = METHOD_LABELS.get(method, method)
        rows.append([label, *[fmt(cell_stats(ours, method, dataset, k, accuracy_pct)) for k in shots]])
        if dataset == "ucm" and any(P.paper_ucm(method, k) is not None for k in shots):
            paper = [P.paper_ucm(method, k) for k in shots]
            rows.append([f"{label} (paper)", *[DASH if v is None else f"{v:.1f}" for v in paper]])
    if not rows:
        return ""
    return f"### {title}\n\n{_table(['method', *[f'{k}-shot' for k in shots]], rows)}"


def invariance_table(results: Sequence[Result], domain: str) -> str:
    """Invariance metrics, averaged over the domain's datasets: rows = (method, shot)."""
    dom = [r for r in results if r.domain == domain]
    getters = {
        "acc (%)": accuracy_pct,
        "acc on T(x) (%)": lambda m: _pct(m.get("invariance", {}).get("mean_accuracy_transformed")),
        "agreement (%)": lambda m: _pct(m.get("invariance", {}).get("mean_agreement")),
        "JS (bits)": lambda m: m.get("invariance", {}).get("mean_js"),
    }
    rows = []
    for method in sorted({r.method for r in dom}, key=_method_rank):
        for shot in sorted({r.shot for r in dom if r.method == method}):
            cells = []
            for name, getter in getters.items():
                means = [cell_stats(dom, method, d, shot, getter) for d in sorted({r.dataset for r in dom})]
                means = [s[0] for s in means if s is not None]
                digits = 3 if name.startswith("JS") else 1
                cells.append(f"{sum(means) / len(means):.{digits}f}" if means else DASH)
            rows.append([METHOD_LABELS.get(method, method), str(shot), *cells])
    if not rows:
        return ""
    return f"### {domain}: invariance (mean over datasets)\n\n{_table(['method', 'shot', *getters], rows)}"


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * float(value)


def render_tables(results: Sequence[Result]) -> str:
    """The whole markdown report."""
    parts = [
        "# Results",
        f"Accuracy (%) on the original test images; mean over seeds (± sample std). Rows marked (paper): {P.SOURCE}. "
        "Paper averages are over "
        + "; ".join(f"{d}: {', '.join(ds)}" for d, ds in P.PAPER_DOMAIN_DATASETS.items())
        + ". Ours: Avg over the columns shown; * = some of the columns have no result.",
    ]
    domains = sorted({r.domain for r in results}, key=_domain_rank)
    for domain in domains:
        shots = _shots([r for r in results if r.domain == domain]) or list(P.PAPER_SHOTS)
        parts += [main_table(results, domain, k) for k in shots]
    parts.append(ablation_table(results, P.TABLE7_METHODS, "UCM ablation (Table 7 style): accuracy (%)"))
    parts.append(ablation_table(results, P.TABLE8_METHODS, "UCM divergence ablation, DC-DR (Table 8 style)"))
    parts += [invariance_table(results, d) for d in domains]
    return "\n\n".join(p for p in parts if p) + "\n"


def domain_average_series(results: Sequence[Result], domain: str, method: str) -> dict[int, float]:
    """{shot: mean over the domain's datasets of the seed-mean accuracy (%)} for one method."""
    dom = [r for r in results if r.domain == domain and r.method == method]
    series = {}
    for shot in sorted({r.shot for r in dom}):
        means = [cell_stats(dom, method, d, shot, accuracy_pct) for d in sorted({r.dataset for r in dom})]
        means = [s[0] for s in means if s is not None]
        if means:
            series[shot] = sum(means) / len(means)
    return series


def plot_accuracy_vs_shots(results: Sequence[Result], path: str | Path) -> Path:
    """One panel per domain: domain-average accuracy vs shots per method (solid), paper (dotted, x), shot-independent
    methods as horizontal dashed lines."""
    from verl_ext.evaluation.plots import pyplot, save_figure_atomic

    plt = pyplot()
    domains = sorted({r.domain for r in results}, key=_domain_rank) or ["remote_sensing"]
    fig, axes = plt.subplots(1, len(domains), figsize=(5.5 * len(domains), 4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, domain in zip(axes[0], domains):
        shots = _shots([r for r in results if r.domain == domain]) or list(P.PAPER_SHOTS)
        for i, method in enumerate(sorted({r.method for r in results if r.domain == domain}, key=_method_rank)):
            color, label = colors[i % len(colors)], METHOD_LABELS.get(method, method)
            series = domain_average_series(results, domain, method)
            if set(series) == {0}:
                ax.hlines(series[0], min(shots), max(shots), colors=color, linestyles="--", label=label)
            elif series:
                xs = sorted(k for k in series if k)
                ax.plot(xs, [series[k] for k in xs], marker="o", color=color, label=label)
            paper = {k: P.paper_domain_average(domain, method, k) for k in P.PAPER_SHOTS}
            paper = {k: v for k, v in paper.items() if v is not None}
            if paper:
                ax.plot(list(paper), list(paper.values()), ":", marker="x", color=color, label=f"{label} (paper)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, labels=[str(k) for k in shots])
        ax.set_xlabel("shots per class")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(domain)
        ax.legend(fontsize=7)
    return save_figure_atomic(fig, path)


def summary(result: Result) -> dict[str, Any]:
    """The cell and its headline metrics (what results.json keeps of a metrics.json)."""
    m = result.metrics
    keep = {k: m.get(k) for k in ("n", "accuracy", "valid_rate", "invariance")}
    return {k: getattr(result, k) for k in ("method", "dataset", "domain", "shot", "seed")} | keep


def write_report(runs_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """collect: results.json, tables.md and accuracy_vs_shots.png in `out_dir` (all written atomically)."""
    from verl_ext.evaluation.runner import write_json_atomic, write_text_atomic

    results = collect_results(runs_dir)
    out = Path(out_dir)
    paths = {"results": out / "results.json", "tables": out / "tables.md", "plot": out / "accuracy_vs_shots.png"}
    write_json_atomic(paths["results"], [summary(r) for r in results])
    write_text_atomic(paths["tables"], render_tables(results))
    plot_accuracy_vs_shots(results, paths["plot"])
    return paths
