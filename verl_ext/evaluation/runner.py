"""Evaluation loop: read test rows, answer every view, compute accuracy and the invariance metrics.

Views are the original image ("identity") and each requested transform T (verl_ext.transforms). A transform is applied
only to rows whose whitelist (`extra_info["transforms"]`) contains it, since e.g. a horizontal flip turns OrganAMNIST's
femur-left into femur-right; rows without a whitelist accept every transform.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from verl_ext.evaluation import metrics as M
from verl_ext.evaluation.backends import EvalBackend, ViewInput
from verl_ext.rewards import NO_FINDING, is_multi_label, label_set, normalize, parse_prediction
from verl_ext.transforms import apply_transform, check_transform_names

IDENTITY = "identity"
# Prefix before the class name when the original response has no "<answer>" tag (empty reasoning).
FALLBACK_PREFIX = "<think>\n</think>\n<answer>"


@dataclass
class Row:
    """One test row, decoded: messages with an image entry, the RGB image, its label and answer vocabulary."""

    index: int
    messages: list[dict[str, Any]]
    image: Any
    label: str
    class_names: list[str]
    multi_label: bool
    transforms: list[str] | None
    dataset: str
    domain: str


def to_messages(prompt: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """verl-style messages whose string content holds "<image>" -> content lists with {"type": "image"} entries."""
    out = []
    for msg in prompt:
        content = msg["content"]
        if isinstance(content, str):
            parts: list[dict[str, Any]] = []
            for i, text in enumerate(content.split("<image>")):
                if i > 0:
                    parts.append({"type": "image"})
                if text:
                    parts.append({"type": "text", "text": text})
            content = parts
        out.append({"role": msg["role"], "content": content})
    return out


def load_rows(path: str | os.PathLike, limit: int | None = None) -> list[Row]:
    """Read a data_prep-schema parquet file into `Row`s (first image of each row, converted to RGB).

    Args:
        path: the parquet file.
        limit: keep only the first `limit` rows (None: all).
    """
    import pyarrow.parquet as pq
    from PIL import Image

    records = pq.read_table(path).to_pylist()
    rows = []
    for i, rec in enumerate(records[:limit] if limit else records):
        extra = rec.get("extra_info") or {}
        source = rec.get("data_source") or ""
        image = Image.open(io.BytesIO(rec["images"][0]["bytes"])).convert("RGB")
        multi = is_multi_label(source, extra)
        classes = [str(c) for c in extra.get("class_names") or []]
        label = str(rec["reward_model"]["ground_truth"])
        whitelist = extra.get("transforms")
        rows.append(
            Row(
                index=int(extra.get("index", i)),
                messages=to_messages(rec["prompt"]),
                image=image,
                label=canonical_label(label, classes, multi),
                class_names=classes or [label],
                multi_label=multi,
                transforms=None if whitelist is None else [str(t) for t in whitelist],
                dataset=str(extra.get("dataset") or source),
                domain=str(extra.get("domain") or ""),
            )
        )
    return rows


def canonical_label(label: str, classes: Sequence[str], multi_label: bool) -> str:
    """The label in `parse_prediction`'s canonical form (multi-label: findings in vocabulary order, "; ")."""
    if not multi_label:
        return label
    found = label_set(label)
    ordered = [c for c in classes if normalize(c) in found]
    return "; ".join(ordered) if ordered else NO_FINDING


def answer_prefix(response: str) -> str:
    """The response up to and including its first "<answer>", or `FALLBACK_PREFIX` when it has none."""
    cut = response.find("<answer>")
    return FALLBACK_PREFIX if cut < 0 else response[: cut + len("<answer>")]


def view_allowed(row: Row, view: str) -> bool:
    """Whether `view` is label-preserving for `row` (identity always; else the row's whitelist, None = all)."""
    return view == IDENTITY or row.transforms is None or view in row.transforms


def default_transforms(rows: Sequence[Row]) -> list[str]:
    """The union of the rows' whitelists without identity, in registration order (built-ins, then the user's)."""
    from verl_ext.transforms import registered_names

    seen = {t for r in rows for t in (r.transforms or [])}
    return [t for t in registered_names() if t in seen and t != IDENTITY]


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    """Consecutive slices of `items` of length `size` (the last may be shorter)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_views(
    rows: Sequence[Row],
    backend: EvalBackend,
    transforms: Sequence[str],
    batch_size: int = 8,
    distributions: bool = True,
    progress: Callable[[int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Generate (and score) every allowed (row, view): {view: {"rows": [i...], "responses": [...], "dists": [...]}}.

    Args:
        rows: the test rows.
        backend: an `EvalBackend`.
        transforms: non-identity transform names.
        batch_size: views per backend call.
        distributions: also compute each view's answer distribution (teacher-forced, see `evaluate`).
        progress: called with the number of views done after each backend call.
    """
    views = [IDENTITY, *transforms]
    out: dict[str, dict[str, Any]] = {}
    for view in views:
        idx = [i for i, r in enumerate(rows) if view_allowed(r, view)]
        inputs = [ViewInput(rows[i].messages, apply_transform(rows[i].image, view)) for i in idx]
        responses: list[str] = []
        for chunk in _chunks(inputs, batch_size):
            responses.extend(backend.generate(chunk))
            if progress:
                progress(len(chunk))
        out[view] = {"rows": idx, "inputs": inputs, "responses": responses}
    if distributions:
        prefixes = dict(zip(out[IDENTITY]["rows"], map(answer_prefix, out[IDENTITY]["responses"])))
        for view in views:
            idx, inputs, dists = out[view]["rows"], out[view]["inputs"], []
            for pos in range(0, len(idx), batch_size):
                sel = idx[pos : pos + batch_size]
                logps = backend.score_answers(
                    inputs[pos : pos + batch_size], [prefixes[i] for i in sel], [rows[i].class_names for i in sel]
                )
                dists.extend(M.softmax(lp) for lp in logps)
                if progress:
                    progress(len(sel))
            out[view]["dists"] = dists
    for view in views:
        del out[view]["inputs"]
    return out


def evaluate(rows: Sequence[Row], outputs: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics and per-row predictions from `run_views`'s outputs.

    Returns:
        (metrics dict for metrics.json, one record per (row, view) for predictions.jsonl).

    Note:
        Answer distribution of a view = softmax over the row's classes of Σ_t log π(token_t) for the tokens of
        "<class></answer>", teacher-forced after the same prefix on every view: the ORIGINAL view's response up to
        its "<answer>" (or an empty "<think></think><answer>" when it has none). This mirrors the paper's π^D,
        teacher-forced on the response sampled for the original image, and isolates the effect of the image on the
        answer. Summing (not averaging) token log-probs gives the probability of the whole class string; including
        "</answer>" stops a class that is a prefix of another from taking its mass. JS uses log base 2 (in [0, 1]).
    """
    orig = outputs[IDENTITY]
    preds: dict[str, dict[int, str | None]] = {}
    records = []
    for view, out in outputs.items():
        preds[view] = {}
        for k, (i, resp) in enumerate(zip(out["rows"], out["responses"])):
            row = rows[i]
            pred = parse_prediction(resp, row.class_names, row.multi_label)
            preds[view][i] = pred
            rec = {"index": row.index, "view": view, "label": row.label, "prediction": pred, "response": resp}
            if "dists" in out:
                rec["answer_distribution"] = dict(zip(row.class_names, np.round(out["dists"][k], 6).tolist()))
            records.append(rec)
    labels = [r.label for r in rows]
    pred0 = [preds[IDENTITY][i] for i in orig["rows"]]
    classes = _classes(rows)
    result: dict[str, Any] = {
        "n": len(rows),
        "accuracy": M.accuracy(pred0, labels),
        "valid_rate": sum(p is not None for p in pred0) / len(rows) if rows else float("nan"),
        "classes": classes,
        "per_class_accuracy": M.per_class_accuracy(pred0, labels, classes),
        "per_class_count": {c: labels.count(c) for c in classes},
        "confusion": {
            "rows": classes,
            "columns": [*classes, M.INVALID],
            "matrix": M.confusion_matrix(pred0, labels, classes).tolist(),
        },
        "datasets": dict(Counter(r.dataset for r in rows)),
        "domain": Counter(r.domain for r in rows).most_common(1)[0][0] if rows else "",
        "by_dataset": _by_dataset(rows, pred0),
        "views": {view: _view_metrics(rows, outputs, preds, view) for view in outputs},
    }
    transforms = [v for v in outputs if v != IDENTITY]
    result["invariance"] = {
        "transforms": transforms,
        "mean_accuracy_transformed": M.mean_or_nan([result["views"][t]["accuracy"] for t in transforms]),
        "mean_agreement": M.mean_or_nan([result["views"][t]["agreement_with_original"] for t in transforms]),
        "mean_js": M.mean_or_nan([result["views"][t].get("mean_js_to_original", float("nan")) for t in transforms]),
    }
    return result, records


def _view_metrics(
    rows: Sequence[Row], outputs: dict[str, dict[str, Any]], preds: dict[str, dict[int, str | None]], view: str
) -> dict[str, Any]:
    """Accuracy, valid rate and (non-identity) agreement / mean JS against the original view, on the view's rows."""
    idx = outputs[view]["rows"]
    pv = [preds[view][i] for i in idx]
    labels = [rows[i].label for i in idx]
    out: dict[str, Any] = {
        "n": len(idx),
        "accuracy": M.accuracy(pv, labels),
        "valid_rate": sum(p is not None for p in pv) / len(idx) if idx else float("nan"),
    }
    dists = outputs[view].get("dists")
    if dists is not None:
        vocab = [rows[i].class_names for i in idx]
        single = [k for k, i in enumerate(idx) if not rows[i].multi_label]
        arg = M.argmax_predictions([dists[k] for k in single], [vocab[k] for k in single])
        out["answer_dist_accuracy"] = M.accuracy(arg, [labels[k] for k in single])
    if view != IDENTITY:
        out["agreement_with_original"] = M.agreement([preds[IDENTITY][i] for i in idx], pv)
        if dists is not None:
            pos0 = {i: k for k, i in enumerate(outputs[IDENTITY]["rows"])}
            d0 = [outputs[IDENTITY]["dists"][pos0[i]] for i in idx]
            out["mean_js_to_original"] = M.mean_js(d0, dists)
    return out


def _classes(rows: Sequence[Row]) -> list[str]:
    """Confusion classes: single-label rows' vocabularies in first-seen order, then observed multi-label labels."""
    seen: dict[str, None] = {}
    for r in rows:
        if not r.multi_label:
            seen.update(dict.fromkeys(r.class_names))
    for label in sorted({r.label for r in rows if r.multi_label}):
        seen.setdefault(label, None)
    return list(seen)


def _by_dataset(rows: Sequence[Row], preds: Sequence[str | None]) -> dict[str, dict[str, float]]:
    """{dataset: {"n", "accuracy"}} on the original view."""
    out = {}
    for ds in dict.fromkeys(r.dataset for r in rows):
        sel = [k for k, r in enumerate(rows) if r.dataset == ds]
        out[ds] = {"n": len(sel), "accuracy": M.accuracy([preds[k] for k in sel], [rows[k].label for k in sel])}
    return out


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as JSON (NaN written as null) to a temporary sibling, then rename it over `path`."""
    write_text_atomic(path, json.dumps(nan_to_none(obj), indent=1, sort_keys=False) + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Atomically replace `path` with `text` (temporary file in the same folder + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def nan_to_none(obj: Any) -> Any:
    """Replace float NaN by None recursively (strict JSON)."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    return obj


def check_transforms(transforms: Sequence[str]) -> list[str]:
    """Validate transform names (identity is dropped: it is always the reference view)."""
    check_transform_names(transforms, "--transforms")
    return [t for t in dict.fromkeys(transforms) if t != IDENTITY]
