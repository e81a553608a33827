"""The label-preserving image transforms T of Domain-Aware GRPO: a registry, the built-ins, and the seeded draw.

Paper (arXiv 2601.16419): domain knowledge is a family of transformations under which the label must not change —
rotations for remote-sensing scenes, symmetries (flips) for medical images. The transformed view T(x) keeps the prompt
and the sampled response; only the image changes.

Names are the vocabulary shared by data_prep (each row's whitelist in `extra_info["transforms"]`), the config
(`domain.transforms.names`) and the metrics (`domain/transform_count/<name>`). Built-ins: the whole dihedral group of
the square (identity, the three rotations, the two axis flips and the two diagonal flips) and one non-geometric prior,
H&E stain jitter for histopathology (its function in `verl_ext.priors.stain`), all registered in this module, so
they are there whatever is imported first. More are registered by name with `register_transform` from any module
listed in `domain.transforms.modules`, which every process imports when it parses the config; `registered_names()`
lists the built-ins and those.

A transform is a function on float image tensors `[..., C, H, W]`:

* `kind="geometric"`: a pixel permutation (rotations, flips). It commutes with the processor's per-channel
  normalisation, so the worker applies it directly to the model's normalised pixels — exact.
* `kind="photometric"`: changes pixel values (e.g. colour). It receives RGB in [0, 1] (the worker un-normalises the
  processor's pixels first and normalises the result again) and the sample's seeded `torch.Generator`.

Either may change the image size (a 90° turn swaps height and width); see `verl_ext.views` for how the view keeps
the original's image-token count.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from verl_ext.priors.stain import hed_jitter

TransformFn = Callable[..., torch.Tensor]  # (image [..., C, H, W], generator, **params) -> [..., C, H', W']
KINDS = ("geometric", "photometric")


@dataclass(frozen=True)
class TransformSpec:
    """One registered transform.

    Attributes:
        name: the vocabulary name (whitelists, config, metrics).
        fn: `fn(image, generator, **params)`; `image` `[..., C, H, W]` float, `generator` a seeded `torch.Generator`.
        kind: "geometric" (a pixel permutation, applied to normalised pixels) or "photometric" (RGB in [0, 1]).
        defaults: default keyword parameters of `fn` (overridden by `domain.transforms.params.<name>`).
        pil_op: the exact PIL operation of a geometric built-in (lossless on PIL images), else None.
    """

    name: str
    fn: TransformFn
    kind: str = "geometric"
    defaults: Mapping[str, Any] = field(default_factory=dict)
    pil_op: Image.Transpose | None = None


_REGISTRY: dict[str, TransformSpec] = {}


def register_transform(
    name: str,
    fn: TransformFn,
    kind: str = "geometric",
    defaults: Mapping[str, Any] | None = None,
    pil_op: Image.Transpose | None = None,
) -> TransformSpec:
    """Register a label-preserving transform under `name` (the same function again is accepted; another raises).

    Args:
        name: vocabulary name, e.g. "hed_jitter"; list it in a dataset's whitelist and in `domain.transforms.names`.
        fn: `fn(image [..., C, H, W] float, generator: torch.Generator, **params) -> [..., C, H', W']`; it must be
            deterministic given the generator (both views of a step and every process draw the same result).
        kind: "geometric" or "photometric" (see the module docstring).
        defaults: default parameters; a run overrides them with `domain.transforms.params.<name>`.
    """
    if kind not in KINDS:
        raise ValueError(f"register_transform({name!r}): kind must be one of {list(KINDS)}, got {kind!r}")
    spec = TransformSpec(name=name, fn=fn, kind=kind, defaults=dict(defaults or {}), pil_op=pil_op)
    existing = _REGISTRY.get(name)
    if existing is not None and (existing.fn is not fn or existing.kind != kind):
        raise ValueError(f"transform {name!r} is already registered with another function")
    _REGISTRY[name] = spec
    return spec


def get_transform(name: str) -> TransformSpec:
    """The registered transform `name` (ValueError naming the known ones otherwise)."""
    check_transform_names([name], "transform")
    return _REGISTRY[name]


def registered_names() -> tuple[str, ...]:
    """Every registered name, built-ins first, then in registration order."""
    return tuple(_REGISTRY)


def import_transform_modules(modules: Sequence[str], where: str = "domain.transforms.modules") -> None:
    """Import the modules that register transforms (errors name the config key)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as err:  # an import error in the user's module: one line naming the key
            raise ValueError(f"{where}: cannot import {module!r} ({type(err).__name__}: {err})") from None


def check_transform_names(names: Sequence[str], where: str) -> None:
    """Raise a ValueError naming `where` if any of `names` is not a registered transform."""
    unknown = [n for n in names if n not in _REGISTRY]
    if unknown:
        raise ValueError(
            f"{where}: unknown transform(s) {unknown}; known transforms are {list(_REGISTRY)} (register more with "
            "verl_ext.transforms.register_transform in a module listed in domain.transforms.modules)"
        )


def swaps_height_width(name: str, height: int, width: int) -> bool:
    """Whether `name` turns an `height` × `width` image into a `width` × `height` one (e.g. rot90 on 84 × 168)."""
    probe = torch.full((3, height, width), 0.5)  # [3, H, W] mid-grey RGB (valid input for photometric ones too)
    out = run_transform(name, probe, torch.Generator().manual_seed(0))
    return height != width and tuple(out.shape[-2:]) == (width, height)


def run_transform(
    name: str,
    image: torch.Tensor,
    generator: torch.Generator,
    params: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Apply a registered transform to a float image tensor `[..., C, H, W]` (see `TransformSpec.kind`)."""
    spec = get_transform(name)
    return spec.fn(image, generator, **{**spec.defaults, **dict(params or {})})


def apply_transform(
    image: Image.Image, name: str, seed: int = 0, params: Mapping[str, Any] | None = None
) -> Image.Image:
    """Return the PIL `image` transformed by `name`.

    Geometric built-ins are exact PIL operations (a pixel permutation, never a resample); other transforms run on the
    image as RGB floats in [0, 1] and are rounded back to 8 bits.
    """
    spec = get_transform(name)
    if spec.name == "identity":
        return image.copy()
    if spec.pil_op is not None:
        return image.transpose(spec.pil_op)
    rgb = image.convert("RGB")
    tensor = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)  # [3, H, W]
    out = run_transform(name, tensor, torch.Generator().manual_seed(int(seed)), params)  # [3, H', W']
    array = (out.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array, mode="RGB")


def draw_seed(seed: int, step: int, row_key: str) -> int:
    """A 63-bit seed for a sample's stochastic transform, deterministic in (seed, step, row key) across processes."""
    digest = hashlib.blake2b(f"params:{seed}:{step}:{row_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def draw_transform(candidates: Sequence[str], seed: int, step: int, row_key: str) -> str:
    """Draw one transform for a row at a training step, deterministically.

    Args:
        candidates: the allowed non-empty transform names (the row's whitelist ∩ the configured transforms).
        seed: the experiment seed.
        step: the global training step (a new draw every step).
        row_key: a stable id of the sample (e.g. its uid and position), so rows differ within a step.

    Note:
        The paper does not say how T is chosen per sample; the default draws one uniformly per sample and step.
        A hash (not Python's salted `hash`) keeps the draw identical across processes and runs.
    """
    if not candidates:
        raise ValueError("draw_transform: no candidate transforms for this row")
    digest = hashlib.blake2b(f"{seed}:{step}:{row_key}".encode(), digest_size=8).digest()
    return sorted(candidates)[int.from_bytes(digest, "little") % len(candidates)]


# --- Built-ins: the dihedral group of the square (rotations counter-clockwise, as PIL's ROTATE_* and numpy's rot90).
def _geometric(op: Callable[[torch.Tensor], torch.Tensor]) -> TransformFn:
    def fn(image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return op(image)

    return fn


_DIHEDRAL = {
    "identity": (lambda x: x.clone(), None),
    "rot90": (lambda x: torch.rot90(x, 1, dims=(-2, -1)), Image.Transpose.ROTATE_90),
    "rot180": (lambda x: torch.rot90(x, 2, dims=(-2, -1)), Image.Transpose.ROTATE_180),
    "rot270": (lambda x: torch.rot90(x, 3, dims=(-2, -1)), Image.Transpose.ROTATE_270),
    "hflip": (lambda x: torch.flip(x, dims=(-1,)), Image.Transpose.FLIP_LEFT_RIGHT),
    "vflip": (lambda x: torch.flip(x, dims=(-2,)), Image.Transpose.FLIP_TOP_BOTTOM),
    # mirror in the main diagonal (pixel (row r, col c) -> (c, r)) and in the anti-diagonal
    "transpose": (lambda x: x.transpose(-2, -1), Image.Transpose.TRANSPOSE),
    "transverse": (lambda x: torch.rot90(x, 2, dims=(-2, -1)).transpose(-2, -1), Image.Transpose.TRANSVERSE),
}
for _name, (_op, _pil) in _DIHEDRAL.items():
    register_transform(_name, _geometric(_op), kind="geometric", pil_op=_pil)

DIHEDRAL_NAMES: tuple[str, ...] = tuple(_DIHEDRAL)  # the 8 symmetries of the square
ROTATIONS = ("rot90", "rot180", "rot270")
FLIPS = ("hflip", "vflip")
DIAGONAL_FLIPS = ("transpose", "transverse")

# The non-geometric built-in: H&E stain jitter (its math in verl_ext/priors/stain.py, which imports nothing from here).
register_transform("hed_jitter", hed_jitter, kind="photometric", defaults={"sigma": 0.05})

# The built-ins, registered above whatever imports this module first; `registered_names()` adds the user's.
TRANSFORM_NAMES: tuple[str, ...] = registered_names()
