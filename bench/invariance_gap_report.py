"""The invariance-gap bench's report: the bases tried and the RL runs from them (RESULTS.md's `invariance_gap` section,
`python bench/bench_invariance_gap.py report --out W [--write-results]`).

Runs are pooled over seeds only under one RL settings tag (`--rl-tag`), and every variant is compared with grpo under
the same tag, seed and held-out images: the transformed-view accuracy as a difference, the held-out cross-view JS as
a ratio (`verl_ext.evaluation.paired`, percentile bootstrap over images, seeds pooled). The per-image JS comes from
each run's evaluation folder (`<out>/tries/<base>/eval/<run name>/predictions.jsonl`), joined with the record by
image id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from recipe.domain_grpo.demo_pipeline import D4_TRANSFORMS, Settings, run_name
from verl_ext.evaluation.paired import image_values, paired_comparison, read_predictions
from verl_ext.stats import separation

IDENTITY = "identity"
TITLE = "Invariance gap: a base that reads upright digits only, and the domain terms from it (CPU, tiny model)"
# The section's reading, written by hand from the recorded numbers: the text before and after the tables.
NOTES = Path(__file__).with_name("invariance_gap_notes.md")
TABLES_MARK = "<!-- tables -->"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _ci(stat: dict) -> str:
    return f"{stat['value']:+.3f} [{stat['ci_low']:+.3f}, {stat['ci_high']:+.3f}]"


def tries_table(tries: Sequence[dict]) -> list[str]:
    """One row per base tried: size, SFT settings, time, accuracy per view, the gap and its interval."""
    views = [IDENTITY, *D4_TRANSFORMS]
    head = (
        "| try | size | SFT steps × batch, lr, overrides | SFT min | "
        + " | ".join(views)
        + " | transformed | gap [95% CI] |"
    )
    lines = [head, "|" + "---|" * (len(views) + 6)]
    for t in tries:
        accs = " | ".join(f"{t['accuracy'].get(v, float('nan')):.3f}" for v in views)
        sft_min = (t.get("sft_seconds") or float("nan")) / 60
        lines.append(
            f"| {t['name']} | {' '.join(t['size'])} | {t['sft_steps']} × {t['sft_batch']}, {t['sft_lr']:g} "
            f"{' '.join(t.get('sft_overrides') or [])} | "
            f"{sft_min:.1f} | {accs} | {t['transformed']['value']:.3f} | {_ci(t['gap'])} |"
        )
    return lines


def rl_groups(runs: Sequence[dict]) -> dict[str, dict[str, list[dict]]]:
    """{RL settings tag: {variant: runs over seeds}}: runs are pooled over seeds only under one tag, and each is
    compared with grpo under the same tag and seed. A run recorded again (a rerun whose steps were skipped) counts
    once: its last record.

    Raises:
        SystemExit: one tag recorded with two different settings (pooling them would mix two experiments).
    """
    defaults = json.loads(json.dumps({k: v for k, v in asdict(Settings()).items() if k != "transforms"}))
    groups: dict[str, dict[str, list[dict]]] = {}
    settings: dict[str, dict] = {}
    for r in runs:
        tag = r.get("rl_tag", "")
        mine = {**defaults, **r["settings"]}  # records written before a field existed had its default
        known = settings.setdefault(tag, mine)
        if known != mine:
            changed = sorted(k for k in known if known[k] != mine[k])
            raise SystemExit(
                f"rl.jsonl: RL tag {tag or '(none)'!r} was recorded with other settings ({changed}); "
                "give each setting its own --rl-tag"
            )
        runs_of = groups.setdefault(tag, {}).setdefault(r["variant"], [])
        runs_of[:] = [*(o for o in runs_of if o["seed"] != r["seed"]), r]
    return groups


def paired_vs_grpo(rs: Sequence[dict], grpo: Sequence[dict]) -> dict | None:
    """The transformed-view accuracy of `rs` minus grpo's on the same seed and images, pooled over seeds
    (`stratified_paired_delta`); None without a grpo run of the same seed."""
    from verl_ext.stats import stratified_paired_delta

    by_seed = {r["seed"]: r for r in grpo}
    pairs = [(by_seed[r["seed"]], r) for r in rs if r["seed"] in by_seed]
    if not pairs:
        return None
    for a, b in pairs:  # the per-image lists are joined by position: only on the same images, in the same order
        if a["images"] != b["images"]:
            raise SystemExit(f"rl.jsonl: {b['variant']} and grpo (seed {b['seed']}) were evaluated on other images")
    return stratified_paired_delta([(a["per_image_transformed"], b["per_image_transformed"]) for a, b in pairs])


def run_images(out: Path, r: dict) -> dict[int, dict[str, float]]:
    """{image: per-image held-out numbers} of one recorded run, from its evaluation folder (`image_values`).

    Raises:
        SystemExit: the folder is missing, or its images are not the record's (another evaluation replaced it).
    """
    settings = r["settings"]
    name = run_name(r["variant"], r["seed"], settings["rl_steps"], r.get("rl_tag", ""))
    path = out / "tries" / r["base"] / "eval" / name / "predictions.jsonl"
    if not path.exists():
        raise SystemExit(f"report: {path} is missing (the evaluation of a recorded run)")
    values = image_values(read_predictions(path))
    if sorted(values) != sorted(r["images"]):
        raise SystemExit(f"report: {path} holds other images than the record of {name}: rerun its evaluation")
    return values


def js_vs_grpo(out: Path, rs: Sequence[dict], grpo: Sequence[dict]) -> dict | None:
    """The held-out cross-view JS of `rs` against grpo's on the same seeds and images (ratio with its interval,
    seeds pooled); None without a grpo run of the same seed."""
    by_seed = {r["seed"]: r for r in grpo}
    pairs = [(by_seed[r["seed"]], r) for r in rs if r["seed"] in by_seed]
    if not pairs:
        return None
    base = {a["seed"]: run_images(out, a) for a, _ in pairs}
    arm = {b["seed"]: run_images(out, b) for _, b in pairs}
    return paired_comparison(base, arm, "js")


def rl_table(runs: Sequence[dict], bases: Sequence[dict] = (), out: Path | None = None) -> list[str]:
    """Per RL tag and variant over seeds: original / transformed accuracy, gap and held-out cross-view JS (mean ±
    std over seeds); against grpo under the same tag, seed and images: the difference of the transformed accuracy
    and (with `out`, where the evaluation folders are) the ratio of the JS, each with its 95% interval."""
    from verl_ext.stats import mean_std

    lines = [
        "| RL settings | variant | seeds | acc original | acc transformed | gap | held-out JS (bits) "
        "| Δ transformed acc vs grpo [95% CI] | JS / grpo's [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in bases:  # the SFT base every run started from, for reference
        row = f"{t['accuracy'][IDENTITY]:.3f} | {t['transformed']['value']:.3f} | {t['gap']['value']:.3f}"
        lines.append(f"| – | SFT base {t['name']} (no RL) | – | {row} | {t.get('mean_js', float('nan')):.3f} | – | – |")
    for tag, by_variant in rl_groups(runs).items():
        for variant, rs in by_variant.items():
            cells = []
            for key in ("original", "transformed", "gap", "mean_js"):
                vals = [
                    r["accuracy"][IDENTITY] if key == "original" else r[key] if key == "mean_js" else r[key]["value"]
                    for r in rs
                ]
                m, sd = mean_std(vals)
                cells.append(f"{m:.3f} ± {sd:.3f}" if sd == sd else f"{m:.3f}")
            grpo = by_variant.get("grpo", [])
            d = None if variant == "grpo" else paired_vs_grpo(rs, grpo)
            delta = f"{d['delta']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if d else "–"
            j = None if variant == "grpo" or out is None else js_vs_grpo(out, rs, grpo)
            ratio = _ratio(j) if j else "–"
            seeds = ",".join(str(r["seed"]) for r in rs)
            lines.append(f"| {tag or 'default'} | {variant} | {seeds} | {' | '.join(cells)} | {delta} | {ratio} |")
    return lines


def _ratio(j: dict) -> str:
    """A JS ratio with its interval, to 3 significant digits (2 decimals wrote 0.9967 [0.9960, 0.9975] as
    1.00 [1.00, 1.00], next to the words "excludes 1")."""
    return f"{j['ratio']:.3g} [{j['ratio_low']:.3g}, {j['ratio_high']:.3g}]"


def _excludes_zero(stat: dict) -> bool:
    return separation(stat["ci_low"], stat["ci_high"]) != 0


def headline(tries: Sequence[dict], runs: Sequence[dict], out: Path | None = None) -> str:
    """The section's first line: which intervals exclude zero (accuracy) or one (JS ratio), from the records."""
    gaps = sorted((t for t in tries if _excludes_zero(t["gap"])), key=lambda t: -t["gap"]["value"])
    base = f"**Base gap: the interval excludes zero for {len(gaps)} of {len(tries)} bases tried**"
    if gaps:
        base += f" ({gaps[0]['name']}: gap {_ci(gaps[0]['gap'])})"
    moved, js = [], []
    for tag, by_variant in rl_groups(runs).items():
        grpo = by_variant.get("grpo", [])
        for variant in sorted(set(by_variant) - {"grpo"}):
            rs = by_variant[variant]
            where = f"{tag or 'default'}, {len(rs)} seed{'s' if len(rs) > 1 else ''}"
            d = paired_vs_grpo(rs, grpo)
            if d and _excludes_zero({"ci_low": d["ci_low"], "ci_high": d["ci_high"]}):
                moved.append(f"{variant} ({where}: {d['delta']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}])")
            j = js_vs_grpo(out, rs, grpo) if out is not None else None
            if j and separation(j["ratio_low"], j["ratio_high"], null=1.0):
                js.append(f"{variant} ({where}: {_ratio(j)})")
    rl = "RL vs grpo, accuracy on the transformed views: "
    rl += f"the interval excludes zero for {', '.join(moved)}" if moved else "no interval excludes zero"
    rl += "; held-out JS / grpo's: the interval excludes 1 for " + (", ".join(js) if js else "none")
    scale = "Tiny CPU model: a check of the machinery, except where an interval named here excludes zero (or 1). "
    return f"{scale}{base}; {rl if runs else 'no RL run recorded'}."


def report(out: Path, write: bool = False) -> str:
    """The recorded tries and RL runs as markdown; `write`: RESULTS.md's `invariance_gap` section."""
    from bench.results_file import replace_section

    tries, runs = read_jsonl(out / "tries.jsonl"), read_jsonl(out / "rl.jsonl")
    head, tail = (part.strip() for part in NOTES.read_text().split(TABLES_MARK))
    bases = [t for t in tries if t["name"] in {r["base"] for r in runs}]
    lines = [headline(tries, runs, out), "", head, "", *tries_table(tries), "", *rl_table(runs, bases, out), "", tail]
    body = "\n".join(lines) + "\n"
    print(body)
    if write:
        replace_section(Path(__file__).parent / "RESULTS.md", "invariance_gap", TITLE, body)
    return body
