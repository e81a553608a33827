"""The published numbers of Domain-Aware GRPO (arXiv 2601.16419, v1 tables), as reference rows for our tables.

Accuracy in %, Qwen2.5-VL. The paper's main tables (2/3) are summarised here by their domain averages only, over the
datasets in `PAPER_DOMAIN_DATASETS`; the UCM ablations (Tables 7/8) per shot. Method names are the experiment
matrix's (`recipe.domain_grpo.experiments.matrix.METHODS`); "dc_dr" is the paper's method ("ours": KL for DC,
JS for DR).
"""

from __future__ import annotations

SOURCE = "arXiv 2601.16419 v1, Qwen2.5-VL"
PAPER_SHOTS: tuple[int, ...] = (1, 2, 4, 8)
# Methods whose number does not depend on the number of shots (evaluation only); stored under shot 0.
SHOT_INDEPENDENT = frozenset({"zero_shot", "prompt_injection"})

# The datasets the paper averages over (our dataset ids, as data_prep names them).
PAPER_DOMAIN_DATASETS: dict[str, tuple[str, ...]] = {
    "remote_sensing": ("ucm", "aid", "rsicd", "whu_rs19", "patternnet", "resisc45"),
    "medical": ("organamnist", "bloodmnist", "dermamnist", "pathmnist", "tissuemnist"),
}


def _per_shot(values: tuple[float, float, float, float]) -> dict[int, float]:
    """{1: v1, 2: v2, 4: v4, 8: v8}."""
    return dict(zip(PAPER_SHOTS, values))


# Domain averages (Tables 2 and 3): zero-shot, then 1/2/4/8-shot SFT, GRPO (Visual-RFT), ours.
DOMAIN_AVERAGES: dict[str, dict[str, dict[int, float]]] = {
    "remote_sensing": {
        "zero_shot": {0: 16.0},
        "sft": _per_shot((16.8, 18.3, 20.3, 25.5)),
        "grpo": _per_shot((17.4, 19.1, 21.9, 28.5)),
        "dc_dr": _per_shot((19.7, 20.9, 25.0, 32.3)),
    },
    "medical": {
        "zero_shot": {0: 20.7},
        "sft": _per_shot((20.9, 21.4, 22.9, 24.1)),
        "grpo": _per_shot((21.0, 21.6, 23.0, 24.4)),
        "dc_dr": _per_shot((21.5, 23.2, 25.3, 26.8)),
    },
}

# UCM ablations (Table 7: components and data augmentation; Table 8: divergence of DC-DR), 1/2/4/8-shot.
UCM_ABLATIONS: dict[str, dict[int, float]] = {
    "grpo": _per_shot((10.3, 15.7, 18.4, 23.6)),
    "oc": _per_shot((11.5, 15.9, 18.6, 23.5)),
    "dc": _per_shot((14.5, 16.8, 19.1, 26.5)),
    "dc_dr": _per_shot((16.1, 17.1, 20.1, 28.8)),
    "sft_da": _per_shot((10.2, 14.8, 17.1, 21.6)),
    "grpo_da": _per_shot((10.4, 15.8, 18.3, 23.7)),
    "kl_kl": _per_shot((14.8, 16.5, 18.7, 26.5)),
    "js_js": _per_shot((15.7, 16.8, 19.5, 27.6)),
    "js_kl": _per_shot((13.9, 16.1, 17.6, 25.3)),
}
# The rows of each ablation table, in the paper's order ("dc_dr" = KL-JS in Table 8).
TABLE7_METHODS: tuple[str, ...] = ("grpo", "oc", "dc", "dr", "dc_dr", "sft_da", "grpo_da")
TABLE8_METHODS: tuple[str, ...] = ("kl_kl", "js_js", "js_kl", "dc_dr")


def _lookup(table: dict[int, float], method: str, shot: int) -> float | None:
    """table[shot], or table[0] for a shot-independent method."""
    return table.get(0 if method in SHOT_INDEPENDENT else shot)


def paper_domain_average(domain: str, method: str, shot: int) -> float | None:
    """The paper's average accuracy (%) of `method` over `domain`'s datasets at `shot`, or None if not reported.

    Args:
        domain: "remote_sensing" or "medical".
        method: a matrix method name.
        shot: k per class (ignored for shot-independent methods).
    """
    return _lookup(DOMAIN_AVERAGES.get(domain, {}).get(method, {}), method, shot)


def paper_ucm(method: str, shot: int) -> float | None:
    """The paper's UCM accuracy (%) of `method` at `shot` from the ablation tables, or None if not reported."""
    return _lookup(UCM_ABLATIONS.get(method, {}), method, shot)
