"""Run the encoder probes on several checkpoints; write probes.json, probes.md and the PNGs.

Rows of every table: `random`, `random@<seed>` (the base architecture with random weights, one row per seed: the
floor, summarised as mean ± std), the trivial colour rows (`trivial.py`: no encoder), then each model in the order
given (the first, or the one named `base`, is the base the weight changes are measured against). Probe sets: the
built-in ones (`datasets.TASKS`) and any data_prep parquet (`parquet_sets`). Intervals: `summary.py`.
"""

from __future__ import annotations

import gc
import json
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
from verl_ext.probes.probes import limit_splits, linear_probe, segmentation_keep, segmentation_probe
from verl_ext.probes.summary import NOT_ROWS, floor_summary, markdown, probe_intervals
from verl_ext.probes.trivial import TRIVIAL_ROWS, trivial_linear, trivial_segmentation
from verl_ext.probes.weights import relative_change, vision_state

PROBES = ("linear", "segmentation", "gradmap", "weights")
RANDOM_SEEDS = (1234, 1235, 1236)
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


def floor_name(k: int, seed: int) -> str:
    """`random` for the first seed (the row earlier reports name), `random@<seed>` for the others."""
    return FLOOR if k == 0 else f"{FLOOR}@{seed}"


def parquet_sets(specs: Sequence[str], seed: int = 0) -> dict[str, D.ProbeSet]:
    """`NAME=PATH[:PATH...]` or `PATH` (named after its folder) -> {name: the data_prep parquet(s) as a probe set}."""
    out = {}
    for spec in specs:
        name, sep, paths = spec.partition("=")
        if not sep:
            name, paths = Path(spec).parent.name or Path(spec).stem, spec
        if not name or name in out or name in D.TASKS:
            raise ProbeError(f"--probe-parquet {spec!r}: give each set a new NAME (NAME=PATH[:PATH...])")
        try:
            out[name] = D.parquet_set(name, [p for p in paths.split(":") if p], seed)
        except (ValueError, OSError) as err:
            raise ProbeError(str(err)) from err
    return out


def _encoders(models: dict[str, Path], random_seeds: Sequence[int], device: str):
    """(name, encoder) pairs, one at a time: the random floor (one per seed) first, then every model."""
    base = models[base_name(models)]
    for k, seed in enumerate(random_seeds):
        yield floor_name(k, seed), random_vision_encoder(base, seed=seed).to(device)
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
    random_seeds: Sequence[int] = RANDOM_SEEDS,
    device: str = "cpu",
    batch_size: int = 32,
    gradmap_data: str | None = None,
    gradmap_count: int = 6,
    gradmap_target: str = DEFAULT_TARGET,
    c_grid: Sequence[float] = C_GRID,
    progress: bool = True,
    probe_parquets: Sequence[str] = (),
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
    if not random_seeds:
        raise ProbeError("--random-seeds: at least one seed (3 or more for a floor with a spread)")
    unknown_tasks = sorted(set(tasks) - set(D.TASKS))
    if unknown_tasks:
        raise ProbeError(f"--tasks: unknown {unknown_tasks}; choose from {list(D.TASKS)} (or --probe-parquet)")
    sets = {t: D.classification_set(t, seed) for t in (tasks if "linear" in probes else ())}
    sets |= parquet_sets(probe_parquets, seed) if "linear" in probes else {}
    seg = D.segmentation_scene(input_size, seed) if "segmentation" in probes else None
    floors = [floor_name(k, s) for k, s in enumerate(random_seeds)]
    results: dict[str, Any] = {**{f: {} for f in floors}, **{r: {} for r in TRIVIAL_ROWS}, **{n: {} for n in paths}}
    for task, probe_set in sets.items():
        for row, e in trivial_linear(probe_set, limit_splits(probe_set, limit, seed), input_size, c_grid, seed).items():
            results[row].setdefault("linear", {})[task] = e
    if seg is not None:
        idx = limit_splits(seg, limit, seed)
        keep = segmentation_keep(len(idx["train"]) * int(seg.labels[0].size), seed)
        results["patch colour"]["segmentation"] = trivial_segmentation(seg, idx, input_size, keep, c_grid, seed)
    results = {k: v for k, v in results.items() if v or k not in TRIVIAL_ROWS}
    depth = None
    for name, encoder in _encoders(paths, random_seeds, device):
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
        "random_seeds": list(random_seeds),
        "input_size": input_size,
        "blocks": blocks,
        "limit": limit,
        "seed": seed,
        "c_grid": list(c_grid),
        "sets": {t: s.info | {"classes": s.class_names} for t, s in sets.items()},
        "segmentation_set": seg.info if seg is not None else None,
    }
    results["floor"] = floor_summary(results)
    results["intervals"] = probe_intervals(results, seed)
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


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """probes.json (atomic, last), probes.md and the per-block PNGs."""
    out.mkdir(parents=True, exist_ok=True)
    encoders = {m: r for m, r in results.items() if m not in NOT_ROWS and m not in TRIVIAL_ROWS}
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
