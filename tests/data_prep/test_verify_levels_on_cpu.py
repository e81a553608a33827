"""`--verify fast|full|pixels`: `full` (JPEG draft decode: the whole entropy-coded stream, the inverse DCT of the DC
term of luma only) catches every damage the complete decode (`pixels`) catches, on real Sentinel-2 JPEGs of every
flavour and a corpus of damage kinds; `fast` (header + end marker) catches fewer, as documented."""

from __future__ import annotations

import shutil

import pytest
from dp_fixtures import JPEG_VARIANTS, add_bad_images, jpeg_bytes, jpeg_damages, make_fixture, s2_tile
from dp_helpers import rows, run_rs

from data_prep.__main__ import run
from data_prep.images import VERIFY_LEVELS, encode_image_bytes

MIN_SIZE = 56


@pytest.fixture(scope="module")
def clean_jpegs() -> dict[str, bytes]:
    tile = s2_tile()
    return {name: jpeg_bytes(tile, **options) for name, options in JPEG_VARIANTS.items()}


def caught(data: bytes, verify: str) -> bool:
    """True if `verify` refuses `data` (an RGB JPEG that would otherwise be stored as is)."""
    enc = encode_image_bytes(data, MIN_SIZE, verify)
    assert enc.data is None or enc.data == data  # a kept JPEG is never re-encoded
    return enc.data is None


def test_three_levels():
    assert VERIFY_LEVELS == ("fast", "full", "pixels")


@pytest.mark.parametrize("variant", list(JPEG_VARIANTS))
def test_clean_jpegs_of_every_flavour_pass_every_level_unchanged(clean_jpegs, variant):
    data = clean_jpegs[variant]
    for verify in VERIFY_LEVELS:
        enc = encode_image_bytes(data, MIN_SIZE, verify)
        assert enc.data == data and (enc.width, enc.height) == (256, 256) and enc.conversions == ()  # original size


@pytest.mark.parametrize("variant", list(JPEG_VARIANTS))
def test_full_catches_exactly_what_the_complete_decode_catches(clean_jpegs, variant):
    damaged = jpeg_damages(clean_jpegs[variant])
    by_pixels = {name for name, data in damaged.items() if caught(data, "pixels")}
    by_full = {name for name, data in damaged.items() if caught(data, "full")}
    by_fast = {name for name, data in damaged.items() if caught(data, "fast")}
    assert by_full == by_pixels
    # not vacuous: every truncation, garbage and broken table is caught by both ...
    must = {n for n in damaged if n.startswith(("truncated_", "garbage", "random_bytes", "header_only"))}
    must |= {"no_end_marker", "zeroed_huffman_table", "bad_quant_table_length", "frame_claims_5_components"}
    assert must <= by_pixels, sorted(must - by_pixels)
    # ... while `fast` (header + end marker) misses damage the decoders see, e.g. a stray marker inside the scan
    assert by_fast < by_pixels and not any(n.startswith("stray_marker") for n in by_fast)
    assert {n for n in damaged if n.startswith("stray_marker")} <= by_full


def test_pixels_level_in_the_cli_and_the_bad_image_fixtures(tmp_path):
    root = make_fixture("patternnet", tmp_path / "raw")
    add_bad_images(root / "PatternNet" / "images" / "beach")
    reports = {}
    for verify in VERIFY_LEVELS:
        out = tmp_path / verify
        argv = ["patternnet", "--root", str(root), "--out", str(out), "--shots", "all", "--on-error", "skip"]
        reports[verify] = run([*argv, "--verify", verify, "--workers", "0", "--no-progress"])
        assert reports[verify]["verify"] == verify
    for verify in VERIFY_LEVELS:  # the fixtures' corrupt and truncated files: caught at every level
        assert reports[verify]["skipped"]["by_reason"] == {"corrupt_image": 2}
    for name in ("train_all.parquet", "test.parquet"):  # identical bytes: kept JPEGs, same conversions
        assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "pixels" / name).read_bytes()
    assert reports["full"]["source_image_sizes"] == reports["pixels"]["source_image_sizes"]


def test_full_is_the_default_and_a_damaged_scan_is_skipped(tmp_path, clean_jpegs):
    root = shutil.copytree(make_fixture("whu_rs19", tmp_path / "raw0"), tmp_path / "raw")
    damaged = jpeg_damages(clean_jpegs["baseline_420"])
    (root / "WHU-RS19" / "Beach" / "zz_stray.jpg").write_bytes(damaged["stray_marker_at_50pct"])
    (root / "WHU-RS19" / "Beach" / "zz_ok.jpg").write_bytes(clean_jpegs["progressive"])
    report = run_rs("whu_rs19", root, tmp_path / "out", shots=[None], on_error="skip")
    assert report["verify"] == "full" and report["skipped"]["by_reason"] == {"corrupt_image": 1}
    kept = [r for f in ("train_all", "val", "test") for r in rows(tmp_path / "out" / f"{f}.parquet")]
    assert any(r["extra_info"]["source_path"].endswith("zz_ok.jpg") for r in kept)
