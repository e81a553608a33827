"""The label-preserving image transforms T of Domain-Aware GRPO, and how a row's transform is drawn.

Paper (arXiv 2601.16419): domain knowledge is a family of transformations under which the label must not change —
rotations for remote-sensing scenes, symmetries (flips) for medical images. The transformed view T(x) keeps the prompt
and the sampled response; only the image changes.

Names are the vocabulary shared by data_prep (each row's whitelist in `extra_info["transforms"]`), the config and the
metrics (`domain/transform_count/<name>`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from PIL import Image

# name -> PIL operation. Rotations are counter-clockwise, as PIL's ROTATE_* and numpy's rot90.
_PIL_OPS = {
    "identity": None,
    "rot90": Image.Transpose.ROTATE_90,
    "rot180": Image.Transpose.ROTATE_180,
    "rot270": Image.Transpose.ROTATE_270,
    "hflip": Image.Transpose.FLIP_LEFT_RIGHT,
    "vflip": Image.Transpose.FLIP_TOP_BOTTOM,
}
TRANSFORM_NAMES: tuple[str, ...] = tuple(_PIL_OPS)
# Transforms that swap an image's height and width (and so Qwen2.5-VL's patch grid and M-RoPE position ids).
SWAPS_HEIGHT_WIDTH = frozenset({"rot90", "rot270"})
ROTATIONS = ("rot90", "rot180", "rot270")
FLIPS = ("hflip", "vflip")


def check_transform_names(names: Sequence[str], where: str) -> None:
    """Raise a ValueError naming `where` if any of `names` is not a known transform."""
    unknown = [n for n in names if n not in _PIL_OPS]
    if unknown:
        raise ValueError(f"{where}: unknown transform(s) {unknown}; known transforms are {list(TRANSFORM_NAMES)}")


def apply_transform(image: Image.Image, name: str) -> Image.Image:
    """Return `image` transformed by `name` (lossless: a pixel permutation, never a resample)."""
    check_transform_names([name], "apply_transform")
    op = _PIL_OPS[name]
    return image.copy() if op is None else image.transpose(op)


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
