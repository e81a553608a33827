"""The study's markdown table and pictures, from the evaluation folders, forgetting JSONs and the likelihood JSON.

Files written to `out`: report.md, results.json, reward_per_step.png (jigsaw test reward of each method against the
training step: the base model at step 0, each evaluated checkpoint after; GRPO's training reward from verl's log
dashed, each on its own reward's scale), prior_delta.png (per prior task, each method's accuracy change with its 95 %
paired-bootstrap CI), new_vs_forgetting.png (new-task exact rate against the mean prior-task change, one point per
method), learning_curves.png (per arm: new-task exact and each prior task's accuracy at every evaluated checkpoint).

Verdicts come from intervals: an ordering of the arms is stated only where the paired interval of the two arms'
difference excludes 0 (rows paired by index, resampled within each task, `verl_ext.stats.stratified_paired_delta`);
otherwise the report says "not resolved at n = ...". Every report names the base model, n per task, the rewards and
their maxima, and the image-blind baseline of the puzzles (the best constant answer, scored by the real reward).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recipe.common.runs import metric_series
from recipe.novel_task.baselines import constant_answer_baseline
from recipe.novel_task.report_plots import (
    plot_learning_curves,
    plot_new_vs_forgetting,
    plot_prior_delta,
    plot_reward_per_step,
)
from verl_ext import stats
from verl_ext.evaluation.runner import IDENTITY, write_json_atomic, write_text_atomic
from verl_ext.jigsaw import max_score

# arXiv 2506.23508, Qwen2.5-VL-7B, change from the base model in points (secondary source: shared/reference).
PAPER_SOURCE = "arXiv 2506.23508, Qwen2.5-VL-7B (secondary source; change from base, points)"
PAPER_DELTAS = {
    "grpo": {"RefCOCO": -0.6, "MMStar": 1.7},
    "sft": {"RefCOCO": -57.2, "MMStar": -62.8},
    "sft_rollouts": {"RefCOCO": -8.6, "MMStar": -2.4},
}
PAPER_BASE_NOTE = "base model ≈ 0 % exact on 3 × 3 puzzles"
PAPER_ORDER = ["grpo", "sft_rollouts", "sft"]  # least to most forgetting, by the paper's numbers
DASH = "–"
PRIOR_KINDS = ("classification", "grounding")  # forgetting kinds whose `accuracy` Δ enters the mean prior Δ
# reward functions of verl_ext/jigsaw.py and their maximum for the given weights (dense adds a share in [0, 1])
REWARD_MAX = {"compute_score": 0.0, "compute_dense_score": 1.0}
MACHINERY_LINE = (
    "**A CPU run on a tiny model: it checks the machinery and carries no finding.**"
    " No difference below has an interval that excludes zero."
)


def _load(path: str | Path | None) -> Any:
    return json.loads(Path(path).read_text()) if path and Path(path).exists() else None


def _metrics(eval_dir: str | Path | None, task: str) -> dict[str, Any] | None:
    return _load(Path(eval_dir) / task / "metrics.json") if eval_dir else None


def _pct(value: Any, signed: bool = False) -> str:
    if value is None or value != value:
        return DASH
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _ci(stat: Mapping[str, float] | None) -> str:
    if not stat or stat.get("delta") is None or stat["delta"] != stat["delta"]:
        return DASH
    return f"{100 * stat['delta']:+.1f} [{100 * stat['ci_low']:+.1f}, {100 * stat['ci_high']:+.1f}]"


def collect(report: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the tables and plots show, as plain data (also written to results.json)."""
    new = str(report.get("new_task", "jigsaw"))
    likelihood = (_load(report.get("likelihood")) or {}).get("datasets", {})
    base = _metrics(report.get("base_eval"), new) or {}
    rows, prior_tasks, prior_n = {}, [], {}
    for name, entry in (report.get("methods") or {}).items():
        forgetting = _load(entry.get("forgetting")) or {}
        prior = {t: v for t, v in forgetting.items() if v.get("kind") in PRIOR_KINDS}
        prior_tasks += [t for t in prior if t not in prior_tasks]
        prior_n |= {t: v.get("n", v["accuracy"].get("n")) for t, v in prior.items()}
        deltas = [v["accuracy"]["delta"] for v in prior.values() if v["accuracy"]["delta"] is not None]
        data = likelihood.get(str(entry.get("data", name)), {})
        rows[name] = {
            "label": str(entry.get("label", name)),
            "new_task": _metrics(entry.get("eval"), new) or {},
            "prior": prior,
            "mean_prior_delta": sum(deltas) / len(deltas) if deltas else None,
            "train_data_logprob": data.get("mean_token_logprob"),
            "train_data_rows": data.get("n"),
            "curve": _curve(entry, base, new),
            "exact_curve": _curve(entry, base, new, "exact"),
            "prior_curves": _prior_curves(entry, report.get("base_eval"), prior_tasks),
            "train_reward": _train_reward(entry),
        }
    truths = [r["label"] for r in _records(report.get("base_eval"), new)]
    return {
        "new_task": new,
        "base": base,
        "base_model": str(report.get("base_model") or (base.get("run") or {}).get("model") or DASH),
        "seeds": [str(x) for x in (report.get("seeds") or [])],
        "n": {new: base.get("n"), **prior_n},
        "reward": reward_info(report.get("reward") or {}),
        "image_blind": constant_answer_baseline(truths),
        "methods": rows,
        "prior_tasks": prior_tasks,
        "pairs": arm_pairs(report, new, prior_tasks),
        "machinery_check": bool(report.get("machinery_check")),
        "planned": bool(report.get("planned")),
    }


def reward_info(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The test reward (the evaluation's `compute_score`, paper weights: max 3) and GRPO's training reward + max.

    `spec`: the report's `reward:` section, {"function": compute_score | compute_dense_score, "weights": {...}}.
    """
    function = str(spec.get("function", "compute_score"))
    if function not in REWARD_MAX:
        raise ValueError(f"report.reward.function {function!r}: choose from {sorted(REWARD_MAX)}")
    weights = {k: float(v) for k, v in (spec.get("weights") or {}).items()}
    unknown = set(weights) - {"hit_weight", "acc_weight", "format_weight"}
    if unknown:
        raise ValueError(f"report.reward.weights: unknown {sorted(unknown)} (hit_weight, acc_weight, format_weight)")
    return {
        "test": {"function": "compute_score", "definition": "R_hit + R_acc + R_fmt", "max": max_score()},
        "train": {
            "function": function,
            "weights": weights,
            "definition": "R_hit + R_acc + R_fmt" + (" + digit share" if function == "compute_dense_score" else ""),
            "max": max_score(**weights) + REWARD_MAX[function],
        },
    }


def _records(eval_dir: str | Path | None, task: str) -> list[dict[str, Any]]:
    path = Path(eval_dir) / task / "predictions.jsonl" if eval_dir else None
    if not path or not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("view", IDENTITY) == IDENTITY]


def _row_score(record: Mapping[str, Any]) -> float:
    """1/0 correct: jigsaw `acc` (exact), grounding `hit` (IoU >= 0.5), else prediction == label."""
    if "acc" in record:
        return float(record["acc"])
    if "iou" in record:
        return float(record["hit"])
    return float(record.get("prediction") is not None and record.get("prediction") == record.get("label"))


def _row_scores(eval_dir: str | Path | None, task: str) -> dict[Any, float]:
    return {r["index"]: _row_score(r) for r in _records(eval_dir, task)}


def arm_pairs(report: Mapping[str, Any], new: str, prior_tasks: list[str]) -> dict[str, dict[str, Any]]:
    """For each pair of arms a, b (in the paper's order): paired intervals of b − a on the mean prior accuracy (rows
    resampled within each task, each task weighs the same) and on the new task's exact rate."""
    methods = report.get("methods") or {}
    names = [n for n in PAPER_ORDER if n in methods] + [n for n in methods if n not in PAPER_ORDER]
    seed = int((report.get("seeds") or [0])[0]) if str((report.get("seeds") or [0])[0]).isdigit() else 0
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            entry = {}
            for key, tasks in (("prior", prior_tasks), ("new", [new])):
                strata = []
                for t in tasks:
                    sa, sb = _row_scores(methods[a].get("eval"), t), _row_scores(methods[b].get("eval"), t)
                    common = sorted(set(sa) & set(sb), key=str)
                    if common:
                        strata.append(([sa[k] for k in common], [sb[k] for k in common]))
                entry[key] = stats.stratified_paired_delta(strata, seed=seed) if strata else None
            out[f"{b}-{a}"] = {"a": a, "b": b, **entry}
    return out


def _curve(
    entry: Mapping[str, Any], base: Mapping[str, Any], new: str, key: str = "mean_reward"
) -> list[tuple[int, float]]:
    """(step, jigsaw test `key`): the base at 0, then `checkpoints` {step: eval_dir}, then the final eval."""
    points = [(0, base[key])] if key in base else []
    evals = {int(k): v for k, v in (entry.get("checkpoints") or {}).items()}
    if entry.get("eval") and entry.get("step") is not None:
        evals[int(entry["step"])] = entry["eval"]
    for step in sorted(evals):
        m = _metrics(evals[step], new)
        if m:
            points.append((step, m[key]))
    return points


def _prior_curves(entry: Mapping[str, Any], base_eval: Any, tasks: list[str]) -> dict[str, list[tuple[int, float]]]:
    """{prior task: [(step, accuracy)]}: the base at 0, each `checkpoints` evaluation, the final one."""
    evals = {0: base_eval} | {int(k): v for k, v in (entry.get("checkpoints") or {}).items()}
    if entry.get("eval") and entry.get("step") is not None:
        evals[int(entry["step"])] = entry["eval"]
    names = set(tasks) | {p.parent.name for d in evals.values() if d for p in Path(d).glob("*/metrics.json")}
    out: dict[str, list[tuple[int, float]]] = {}
    for task in sorted(names):
        for step in sorted(evals):
            m = _metrics(evals[step], task)
            if m and m.get("kind") in PRIOR_KINDS and m.get("accuracy") is not None:
                out.setdefault(task, []).append((step, float(m["accuracy"])))
    return out


def _train_reward(entry: Mapping[str, Any]) -> list[tuple[int, float]]:
    """(step, value) of `train_reward_key` in verl's file-logger JSONL `train_log` (GRPO's rollout reward)."""
    path, key = entry.get("train_log"), entry.get("train_reward_key", "critic/score/mean")
    return metric_series(path, key) if path else []


def _interval(stat: Mapping[str, Any] | None) -> str:
    if not stat or stat.get("delta") is None or stat["delta"] != stat["delta"]:
        return DASH
    return f"{100 * stat['delta']:+.1f} [{100 * stat['ci_low']:+.1f}, {100 * stat['ci_high']:+.1f}]"


def significant_differences(results: Mapping[str, Any]) -> list[str]:
    """Every difference in the report whose 95 % interval excludes 0 (arm vs base per task; arm vs arm)."""
    found = []
    for row in results["methods"].values():
        for task, v in row["prior"].items():
            acc = v["accuracy"]
            if acc.get("delta") is not None and stats.separation(acc["ci_low"], acc["ci_high"]):
                found.append(f"{row['label']} vs base on {task}: Δ accuracy {_ci(acc)} (n = {acc.get('n')})")
    for pair in results["pairs"].values():
        for key, what in (("prior", "mean prior accuracy"), ("new", "new-task exact")):
            d = pair.get(key)
            if d and d["delta"] == d["delta"] and stats.separation(d["ci_low"], d["ci_high"]):
                found.append(f"{pair['b']} − {pair['a']} on {what}: {_interval(d)} (n = {d['n']})")
    return found


def header_lines(results: Mapping[str, Any]) -> list[str]:
    """The first lines: what the run is (a CPU machinery check unless an interval excludes 0), the base model, n per
    task, the rewards with their maxima, the image-blind baseline."""
    lines = []
    seeds = ", ".join(results["seeds"]) or DASH
    if results["machinery_check"]:
        found = significant_differences(results)
        if not found:
            lines += [MACHINERY_LINE, ""]
        else:
            lines += [
                "**A CPU run on a tiny model: it checks the machinery. Only these differences have a 95 % interval "
                f"that excludes zero (seeds {seeds}):** " + "; ".join(found) + ".",
                "",
            ]
    lines += ["# Novel task (jigsaw) vs forgetting", ""]
    if results["planned"]:
        lines += ["*Planned report (dry run): every number reads – until its step has run.*", ""]
    n = ", ".join(f"{t} {DASH if k is None else k}" for t, k in results["n"].items())
    lines += [f"Base model `{results['base_model']}`; seeds {seeds}; n per task (rows, paired across arms): {n}.", ""]
    test, train = results["reward"]["test"], results["reward"]["train"]
    lines += [
        f"Rewards: test `{test['function']}` = {test['definition']} (max {test['max']:g}); GRPO training "
        f"`{train['function']}` = {train['definition']} (max {train['max']:g}).",
        "",
    ]
    blind = results["image_blind"]
    if blind:
        answer = blind["answer"].replace("\n", " / ")
        lines += [
            f"Image-blind baseline (one constant answer `{answer}`, the {blind['rule']}, on the base evaluation's "
            f"{blind['n']} puzzles): exact {_pct(blind['exact'])} %, hit {_pct(blind['hit'])} %, reward "
            f"{blind['reward']:.2f} of {blind['reward_max']:g}.",
            "",
        ]
    return lines


def markdown(results: Mapping[str, Any]) -> str:
    """The report's tables (percentages; Δ with the 95 % paired-bootstrap CI)."""
    tasks, methods, base = results["prior_tasks"], results["methods"], results["base"]
    head = ["method", "new-task exact", "new-task hit", "well-formed"] + [f"Δ {t} [95% CI]" for t in tasks]
    head += ["mean prior Δ", "train-data log-lik/token (base model)"]
    lines = header_lines(results) + ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base_cells = ["base", _pct(base.get("exact")), _pct(base.get("hit")), _pct(base.get("valid_rate"))]
    lines.append("| " + " | ".join(base_cells + ["0"] * len(tasks) + ["0", DASH]) + " |")
    for row in methods.values():
        new = row["new_task"]
        cells = [row["label"], _pct(new.get("exact")), _pct(new.get("hit")), _pct(new.get("valid_rate"))]
        cells += [_ci((row["prior"].get(t) or {}).get("accuracy")) for t in tasks]
        lp = row["train_data_logprob"]
        cells += [_pct(row["mean_prior_delta"], signed=True), DASH if lp is None else f"{lp:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Arm against arm (b − a, points; rows paired by index, resampled within each task; 95 % CI):", ""]
    lines += ["| b − a | mean prior accuracy | new-task exact |", "|---|---|---|"]
    for pair in results["pairs"].values():
        lines.append(f"| {pair['b']} − {pair['a']} | {_interval(pair['prior'])} | {_interval(pair['new'])} |")
    lines += ["", "Per prior task: what changed (Δ well-formed rate, Δ teacher-forced accuracy, JS base→trained)", ""]
    lines += [
        "| method | task | Δ accuracy | Δ well-formed | Δ teacher-forced | JS (bits) | reading |",
        "|---" * 7 + "|",
    ]
    for row in methods.values():
        for t in tasks:
            v = row["prior"].get(t)
            if v:
                js = DASH if v.get("answer_js") is None else f"{v['answer_js']:.3f}"
                forced = _ci(v.get("answer_dist_accuracy"))
                cells = [row["label"], t, _ci(v["accuracy"]), _ci(v.get("valid_rate")), forced]
                lines.append("| " + " | ".join([*cells, js, v.get("reading", DASH)]) + " |")
    lines += ["", f"Reference rows ({PAPER_SOURCE}; {PAPER_BASE_NOTE}):", ""]
    lines.append("| method (paper) | Δ RefCOCO | Δ MMStar |")
    lines.append("|---|---|---|")
    for name, d in PAPER_DELTAS.items():
        label = methods.get(name, {}).get("label", name)
        lines.append(f"| {label} (paper) | {d['RefCOCO']:+.1f} | {d['MMStar']:+.1f} |")
    if sum(n in methods for n in PAPER_ORDER) >= 2:
        lines += ["", ordering_line(results["pairs"], {t: results["n"].get(t) for t in tasks})]
    return "\n".join(lines) + "\n"


def ordering_line(pairs: Mapping[str, Mapping[str, Any]], n: Mapping[str, Any]) -> str:
    """Our arms' forgetting order against the paper's, from paired intervals only.

    For each pair of arms next to each other in the paper's order (a forgets less than b), the interval of
    mean prior accuracy b − a: below 0 agrees, above 0 contradicts, containing 0 is "not resolved".

    Args:
        pairs: `arm_pairs` output ({"b-a": {"a", "b", "prior": {"delta", "ci_low", "ci_high", "n"}}}).
        n: {prior task: rows} for the "not resolved at n = ..." text.
    """
    paper = [m for m in PAPER_ORDER if any(m in (p["a"], p["b"]) for p in pairs.values())]
    n_text = ", ".join(f"{t} {k}" for t, k in n.items()) or DASH
    parts, signs = [], []
    for a, b in zip(paper, paper[1:]):
        d = (pairs.get(f"{b}-{a}") or {}).get("prior")
        sign = stats.separation(d["ci_low"], d["ci_high"]) if d and d["delta"] == d["delta"] else 0
        signs.append(sign)
        rel = {-1: f"{a} > {b}", 1: f"{b} > {a}", 0: f"{a} ? {b}"}[sign]
        parts.append(f"{rel} ({_interval(d)})")
    if any(s > 0 for s in signs):
        verdict = "different ordering"
    elif signs and all(s < 0 for s in signs):
        verdict = "same ordering"
    else:
        verdict = f"not resolved at n = {n_text} (an interval contains 0)"
    return (
        f"Ordering by mean prior accuracy (least forgetting first; b − a in points, 95 % paired CI): ours "
        f"{'; '.join(parts)}; paper {' > '.join(paper)} -> {verdict}. "
        "Our prior tasks differ from the paper's, so only the ordering is comparable."
    )


def write_report(report: Mapping[str, Any]) -> dict[str, Path]:
    """Write every file of the report (with `planned: true`, the dry run's skeleton); returns their paths."""
    out = Path(report["out"])
    results = collect(report)
    paths = {"results": out / "results.json", "table": out / "report.md"}
    write_json_atomic(paths["results"], results)
    write_text_atomic(paths["table"], markdown(results))
    paths["reward_per_step"] = plot_reward_per_step(results, out / "reward_per_step.png")
    paths["prior_delta"] = plot_prior_delta(results, out / "prior_delta.png")
    paths["new_vs_forgetting"] = plot_new_vs_forgetting(results, out / "new_vs_forgetting.png")
    paths["learning_curves"] = plot_learning_curves(results, out / "learning_curves.png")
    return paths
