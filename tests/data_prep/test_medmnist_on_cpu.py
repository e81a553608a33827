"""MedMNIST v2 2-D subsets: all twelve flags, MedMNIST+ sizes, multi-label ChestMNIST, broken npz files."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from dp_fixtures import medmnist_arrays, write_medmnist_npz
from dp_helpers import image_of, rows, run_medmnist

from data_prep.medmnist import FLAGS, SUBSETS
from data_prep.npz import NpzArrays
from data_prep.report import DataPrepError
from data_prep.whitelist import allowed_transforms


def test_twelve_flags():
    assert len(FLAGS) == 12 and "chestmnist" in FLAGS and all(f.endswith("mnist") for f in FLAGS)


@pytest.mark.parametrize("flag", FLAGS)
def test_every_flag_converts_with_official_splits_labels_and_upscaled_pixels(tmp_path, flag):
    write_medmnist_npz(tmp_path / "raw", flag, n=4)
    out = tmp_path / "out"
    report = run_medmnist(flag, tmp_path / "raw", out, shots=[None], prompt_variant="injection")
    sub = SUBSETS[flag]
    assert report["split_source"] == f"official ({flag}.npz)" and report["skipped"]["total"] == 0
    arrays = medmnist_arrays(flag, 4)
    for split, name in (("train", "train_all"), ("val", "val"), ("test", "test")):
        got = rows(out / f"{name}.parquet")
        assert [r["extra_info"]["index"] for r in got] == [0, 1, 2, 3]
        for r in got:
            i = r["extra_info"]["index"]
            pix = image_of(r)
            src = arrays[f"{split}_images"][i]
            expected = np.repeat(np.repeat(src, 2, axis=0), 2, axis=1)  # 28 -> 56 nearest
            if src.ndim == 2:
                expected = np.stack([expected] * 3, axis=-1)
            assert pix.shape == (56, 56, 3) and np.array_equal(pix, expected)
            assert r["data_source"] == f"medmnist/{flag}" and r["extra_info"]["split"] == split
            assert r["extra_info"]["transforms"] == list(allowed_transforms(flag))
            assert r["images"][0]["path"] is None and r["ability"] == "medical_image_classification"
            if not sub.multi_label:
                label = int(arrays[f"{split}_labels"][i, 0])
                assert r["reward_model"]["ground_truth"] == sub.labels[label] and r["extra_info"]["label_id"] == label
    expected_conv = {"upscaled": 12} | ({"grayscale->rgb": 12} if sub.n_channels == 1 else {})
    assert report["converted"] == expected_conv


def test_chestmnist_multi_label_ground_truth(tmp_path):
    write_medmnist_npz(tmp_path / "raw", "chestmnist", n=3)  # rows: all-zero, [1], [0, 2 % 13 + 1]
    out = tmp_path / "out"
    run_medmnist("chestmnist", tmp_path / "raw", out, shots=[None])
    got = rows(out / "test.parquet")
    assert [r["reward_model"]["ground_truth"] for r in got] == [
        "no finding",
        "cardiomegaly",
        "atelectasis; infiltration",
    ]
    assert [r["extra_info"]["label_ids"] for r in got] == [[14], [1], [0, 3]]
    assert {r["extra_info"]["label_id"] for r in got} == {-1} and got[0]["extra_info"]["multi_label"] is True
    assert got[0]["extra_info"]["class_names"][-1] == "no finding" and len(got[0]["extra_info"]["class_names"]) == 15
    assert "'no finding'" in got[0]["prompt"][0]["content"]


def test_chestmnist_k_shot_takes_k_per_finding(tmp_path):
    write_medmnist_npz(tmp_path / "raw", "chestmnist", n=40)
    report = run_medmnist("chestmnist", tmp_path / "raw", tmp_path / "out", shots=[1])
    per = report["files"]["train_1shot.parquet"]["per_class"]
    assert all(v >= 1 for v in per.values()) and per["no finding"] == 1


def test_medmnist_plus_size_file_is_not_upscaled(tmp_path):
    write_medmnist_npz(tmp_path / "raw", "organamnist", n=2, size=64)
    out = tmp_path / "out"
    report = run_medmnist("organamnist", tmp_path / "raw", out, size=64, shots=[1])
    assert report["npz"] == "organamnist_64.npz" and report["converted"] == {
        "grayscale->rgb": 6
    }  # 2 (1-shot, classes 0 and 1) + 2 val + 2 test
    assert image_of(rows(out / "test.parquet")[0]).shape == (64, 64, 3)


def test_missing_npz_key_fails_or_skips_that_split(tmp_path):
    write_medmnist_npz(tmp_path / "raw", "bloodmnist", n=8, drop_key="val_labels")
    with pytest.raises(DataPrepError, match=r"missing_npz_key.*val_labels"):
        run_medmnist("bloodmnist", tmp_path / "raw", tmp_path / "fail")
    report = run_medmnist("bloodmnist", tmp_path / "raw", tmp_path / "out", on_error="skip", shots=[1])
    assert report["skipped"]["by_reason"] == {"missing_npz_key": 1} and report["splits"]["val"]["total"] == 0
    assert not (tmp_path / "out" / "val.parquet").exists() and (tmp_path / "out" / "test.parquet").exists()


def test_out_of_range_label_refuses_the_file_even_with_skip(tmp_path):
    # an official file never holds one: it is another subset's file (or damaged), so no row of it can be trusted
    arrays = medmnist_arrays("pneumoniamnist", 4)
    arrays["train_labels"][2, 0] = 7
    np.savez_compressed(tmp_path / "pneumoniamnist.npz", **arrays)
    for on_error in ("fail", "skip"):
        with pytest.raises(
            DataPrepError, match=r"label_out_of_range.*train_images\[2\].*label 7; pneumoniamnist has 0..1"
        ):
            run_medmnist("pneumoniamnist", tmp_path, tmp_path / "out", on_error=on_error)
    assert not (tmp_path / "out").exists()


def test_wrong_label_shape_and_check_sizes(tmp_path):
    arrays = medmnist_arrays("octmnist", 4)
    arrays["test_labels"] = arrays["test_labels"][:3]
    np.savez_compressed(tmp_path / "octmnist.npz", **arrays)
    report = run_medmnist("octmnist", tmp_path, tmp_path / "out", on_error="skip", shots=[1])
    assert report["skipped"]["by_reason"] == {"bad_npz_array": 1}
    with pytest.raises(DataPrepError, match="official 97477"):
        run_medmnist("octmnist", tmp_path, tmp_path / "out2", on_error="skip", check_sizes=True)


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    arrays = medmnist_arrays("breastmnist", 2)
    arrays["test_labels"] = np.array([[0], ["x"]], dtype=object)
    np.savez(tmp_path / "breastmnist.npz", **arrays)
    report = run_medmnist("breastmnist", tmp_path, tmp_path / "out", on_error="skip", shots=[1])
    assert report["skipped"]["by_reason"] == {"bad_npz_array": 1}


def test_npz_rows_stream_in_order(tmp_path):
    big = np.arange(50 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(50, 28, 28)
    np.savez_compressed(tmp_path / "a.npz", train_images=big)
    arrays = NpzArrays(tmp_path / "a.npz")
    got = list(arrays.iter_rows("train_images", [3, 17, 49]))
    assert all(np.array_equal(g, big[i]) for g, i in zip(got, [3, 17, 49]))
    arrays.close()


def _truncated_npz(path, flag: str) -> None:
    """An npz whose test_images member declares more rows than it holds."""
    arrays = medmnist_arrays(flag, 4)
    short = io.BytesIO()
    np.lib.format.write_array_header_1_0(short, np.lib.format.header_data_from_array_1_0(arrays["test_images"]))
    short.write(arrays["test_images"][:2].tobytes())
    with zipfile.ZipFile(path, "w") as zf:
        for key, value in arrays.items():
            if key == "test_images":
                zf.writestr(key + ".npy", short.getvalue())
            else:
                buf = io.BytesIO()
                np.save(buf, value)
                zf.writestr(key + ".npy", buf.getvalue())


def test_truncated_npz_member_is_a_reported_bad_array(tmp_path):
    _truncated_npz(tmp_path / "dermamnist.npz", "dermamnist")
    with pytest.raises(DataPrepError, match=r"bad_npz_array.*truncated"):
        run_medmnist("dermamnist", tmp_path, tmp_path / "fail")
    report = run_medmnist("dermamnist", tmp_path, tmp_path / "out", on_error="skip", shots=[1])
    assert report["skipped"]["by_reason"] == {"bad_npz_array": 1} and report["splits"]["test"]["total"] == 0
