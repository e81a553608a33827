"""Run the encoder probes on several checkpoints; write probes.json, probes.md and the PNGs.

Rows of every table: `random` (the base architecture with random weights: the floor), then each model in the order
given (the first, or the one named `base`, is the base the weight changes are measured against).
"""

from __future__ import annotations

import gc
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from verl_ext.evaluation.runner import write_json_atomic, write_text_atomic
from verl_ext.probes import datasets as D
from verl_ext.probes.features import load_vision_encoder, parse_blocks, random_vision_encoder
from verl_ext.probes.linear import C_GRID
from verl_ext.probes.plots import FLOOR, plot_gradmap_grid, plot_per_block, plot_weight_change
from verl_ext.probes.probes import linear_probe, segmentation_probe
from verl_ext.probes.weights import relative_change, vision_state

PROBES = ("linear", "segmentation", "gradmap", "weights")
DEFAULT_TARGET = "<think>The image shows {label}.</think><answer>{label}</answer>"


class ProbeError(ValueError):
    """A user mistake (bad model path, bad option); the CLI prints it on one line and exits 2."""


def check_model_dir(name: str, path: str) -> Path:
    """A local HF checkpoint folder with a config and safetensors weights."""
    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        raise ProbeError(f"--model {name}={path}: no config.json (a local Hugging Face checkpoint folder is needed)")
    if not any(p.glob("*.safetensors")):
        raise ProbeError(f"--model {name}={path}: no *.safetensors weights")
    return p


def base_name(models: dict[str, Path]) -> str:
    return "base" if "base" in models else next(iter(models))


def gradmap_rows(path: str, count: int, template: str) -> list[dict[str, Any]]:
    """The first `count` rows of a data_prep or preference parquet: messages, image, target (chosen, or template)."""
    import pyarrow.parquet as pq

    from verl_ext.evaluation.runner import load_rows

    rows = load_rows(path, count)
    has_chosen = "chosen" in pq.read_schema(path).names
    chosen = (
        pq.read_table(path, columns=["chosen"]).slice(0, count).column("chosen").to_pylist() if has_chosen else None
    )
    out = []
    for i, row in enumerate(rows):
        target = chosen[i] if chosen and chosen[i] else template.format(label=row.label)
        out.append({"messages": row.messages, "image": row.image, "target": target})
    return out


def _encoders(models: dict[str, Path], random_seed: int, device: str):
    """(name, encoder) pairs, one at a time: the random floor first, then every model."""
    base = models[base_name(models)]
    yield FLOOR, random_vision_encoder(base, seed=random_seed).to(device)
    for name, path in models.items():
        yield name, load_vision_encoder(path).to(device)


def run(
    models: dict[str, str],
    out: str | Path,
    probes: Sequence[str] = ("linear", "segmentation", "weights"),
    tasks: Sequence[str] = D.TASKS,
    input_size: int = 224,
    blocks: str = "all",
    limit: int | None = None,
    seed: int = 0,
    random_seed: int = 1234,
    device: str = "cpu",
    batch_size: int = 32,
    gradmap_data: str | None = None,
    gradmap_count: int = 6,
    gradmap_target: str = DEFAULT_TARGET,
    c_grid: Sequence[float] = C_GRID,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the chosen probes; returns (and writes to `out/probes.json`) the results."""
    from tqdm import tqdm
    from transformers import AutoImageProcessor

    unknown = sorted(set(probes) - set(PROBES))
    if unknown:
        raise ProbeError(f"--probes: unknown {unknown}; choose from {list(PROBES)}")
    if "gradmap" in probes and not gradmap_data:
        raise ProbeError("--probes gradmap needs --gradmap-data (a parquet of image + prompt rows)")
    paths = {name: check_model_dir(name, p) for name, p in models.items()}
    out = Path(out)
    base = base_name(paths)
    processor = AutoImageProcessor.from_pretrained(paths[base], backend="pil")  # 14x faster on CPU than torchvision
    sets = {t: D.classification_set(t, seed) for t in (tasks if "linear" in probes else ())}
    seg = D.segmentation_scene(input_size, seed) if "segmentation" in probes else None
    results: dict[str, Any] = {FLOOR: {}, **{n: {} for n in paths}}
    depth = None
    for name, encoder in _encoders(paths, random_seed, device):
        depth = depth or len(encoder.blocks)
        chosen = parse_blocks(blocks, len(encoder.blocks))
        n_images = sum(_count(s, limit) for s in (*sets.values(), *([seg] if seg is not None else [])))
        with tqdm(total=n_images, desc=f"probes {name}", disable=not progress, file=sys.stderr) as bar:
            kw = dict(limit=limit, seed=seed, batch_size=batch_size, progress=bar.update, grid=c_grid)
            if sets:
                results[name]["linear"] = {
                    t: linear_probe(encoder, processor, s, input_size, chosen, **kw) for t, s in sets.items()
                }
            if seg is not None:
                results[name]["segmentation"] = segmentation_probe(encoder, processor, seg, input_size, chosen, **kw)
        del encoder
        gc.collect()
    if "weights" in probes:
        before = vision_state(paths[base])
        results["weights"] = {n: relative_change(before, vision_state(p)) for n, p in paths.items() if n != base}
    if "gradmap" in probes:
        results["gradmap"] = _gradmaps(paths, gradmap_data, gradmap_count, gradmap_target, input_size, device, out)
    results["run"] = {
        "models": {n: str(p) for n, p in paths.items()},
        "base": base,
        "random_seed": random_seed,
        "input_size": input_size,
        "blocks": blocks,
        "limit": limit,
        "seed": seed,
        "c_grid": list(c_grid),
        "sets": {t: s.info | {"classes": s.class_names} for t, s in sets.items()},
        "segmentation_set": seg.info if seg is not None else None,
    }
    write_outputs(results, out)
    return results


def _count(probe_set: D.ProbeSet, limit: int | None) -> int:
    return sum(min(len(probe_set.index(s)), limit or len(probe_set.images)) for s in D.SPLITS)


def _gradmaps(paths, data, count, template, input_size, device, out) -> dict[str, Any]:
    from verl_ext.probes.gradmaps import gradient_maps, load_model

    rows = gradmap_rows(data, count, template)
    maps = {}
    for name, path in paths.items():
        model, processor = load_model(str(path), device)
        maps[name] = gradient_maps(model, processor, rows, input_size)
        del model
        gc.collect()
    plot_gradmap_grid(maps, out / "gradmaps.png")
    return {n: {"loss_mean": sum(m["loss"] for m in v) / len(v)} for n, v in maps.items()} | {"rows": len(rows)}


def _cell(value: float, floor: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.3f}" if floor is None else f"{value:.3f} (floor {floor:.3f})"


def _last(blocks: dict) -> tuple[str, dict]:
    key = max(blocks, key=lambda b: int(b))
    return key, blocks[key]


def markdown(results: dict[str, Any]) -> str:
    """The probes table: test score of the last block and the best block per model, the floor beside each."""
    models = [m for m in results if m not in ("weights", "gradmap", "run")]
    lines = ["# Encoder probes", ""]
    floor = results.get(FLOOR, {})
    for kind, metric in (("linear", "accuracy"), ("segmentation", "mIoU")):
        entries = {m: results[m].get(kind) for m in models if results[m].get(kind)}
        if not entries:
            continue
        tasks = list(next(iter(entries.values()))) if kind == "linear" else ["s2-segmentation"]
        lines += [f"## {kind} probe (test {metric}; C chosen on val; floor = random-weight encoder)", ""]
        lines += ["| model | " + " | ".join(f"{t} last block | {t} best block" for t in tasks) + " |"]
        lines += ["|---" * (1 + 2 * len(tasks)) + "|"]
        for m, entry in entries.items():
            cells = []
            for t in tasks:
                res = entry[t] if kind == "linear" else entry
                ref = (floor.get(kind) or {}).get(t) if kind == "linear" else floor.get(kind)
                key, last = _last(res["blocks"])
                best_key = max(res["blocks"], key=lambda b: res["blocks"][b]["val"])
                f_last = ref["blocks"][key]["test"] if ref and m != FLOOR else None
                f_best = ref["blocks"][best_key]["test"] if ref and m != FLOOR else None
                cells.append(_cell(last["test"], f_last))
                cells.append(f"{_cell(res['blocks'][best_key]['test'], f_best)} [block {best_key}]")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        if kind == "linear":
            majority = {t: entries[next(iter(entries))][t]["majority"] for t in tasks}
            lines.append(
                "| majority class | " + " | ".join(f"{majority[t]:.3f} | {majority[t]:.3f}" for t in tasks) + " |"
            )
        lines.append("")
    if results.get("weights"):
        lines += ["## relative weight change of the vision encoder vs the base", ""]
        for m, change in results["weights"].items():
            blocks = [v for k, v in change.items() if k.startswith("block_")]
            mean = sum(blocks) / max(1, len(blocks))
            lines.append(f"- {m}: mean over blocks {mean:.3g}; merger {change.get('merger', float('nan')):.3g}")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """probes.json (atomic, last), probes.md and the per-block PNGs."""
    out.mkdir(parents=True, exist_ok=True)
    encoders = {m: r for m, r in results.items() if m not in ("weights", "gradmap", "run")}
    first = next((r for r in encoders.values() if r.get("linear")), None)
    if first:
        for task, res in first["linear"].items():
            series = {m: {"task": r["linear"][task]} for m, r in encoders.items() if r.get("linear")}
            plot_per_block(
                series, "task", "test accuracy", f"linear probe: {task}", out / f"linear_{task}.png", res["majority"]
            )
    if any(r.get("segmentation") for r in encoders.values()):
        series = {m: r for m, r in encoders.items() if r.get("segmentation")}
        plot_per_block(series, "segmentation", "test mIoU", "patch segmentation probe", out / "segmentation.png")
    if results.get("weights"):
        plot_weight_change(results["weights"], out / "weight_change.png")
    write_text_atomic(out / "probes.md", markdown(results))
    write_json_atomic(out / "probes.json", json.loads(json.dumps(results, default=_json_default)))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor | Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)
