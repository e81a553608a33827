"""Row schema, prompt builders and transform whitelists (hand-written expectations)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from data_prep import allowed_transforms
from data_prep.prompts import build_question
from data_prep.schema import ARROW_SCHEMA, COLUMNS, ground_truth_for, make_row
from data_prep.whitelist import ALL, known_datasets
from verl_ext.transforms import DIHEDRAL_NAMES, check_transform_names

CHEST = [*"atelectasis cardiomegaly effusion".split(), "no finding"]


def _row(**kw):
    args = dict(
        data_source="ucm",
        question="Q?",
        image_bytes=b"png",
        image_path="a/b.tif",
        domain="remote_sensing",
        label_ids=[1],
        class_names=["agricultural", "airplane"],
        multi_label=False,
        transforms=("identity", "rot90"),
        prompt_variant="plain",
        split="train",
        index=7,
        source_path="a/b.tif",
    )
    args.update(kw)
    return make_row(**args)


def test_make_row_matches_the_issue_schema_and_arrow_types():
    row = _row()
    assert tuple(row) == COLUMNS
    assert row["prompt"] == [{"role": "user", "content": "<image>Q?"}]
    assert row["images"] == [{"bytes": b"png", "path": "a/b.tif"}]
    assert row["ability"] == "remote_sensing_scene_classification"
    assert row["reward_model"] == {"style": "rule", "ground_truth": "airplane"}
    info = row["extra_info"]
    assert (info["label_id"], info["label_ids"], info["index"], info["dataset"]) == (1, [1], 7, "ucm")
    assert info["transforms"] == ["identity", "rot90"] and info["domain"] == "remote_sensing"
    table = pa.Table.from_pylist([row], schema=ARROW_SCHEMA)
    assert table.to_pylist()[0] == row


def test_multi_label_ground_truth_is_canonical_order_joined_and_no_finding():
    row = _row(
        data_source="medmnist/chestmnist", domain="medical", multi_label=True, class_names=CHEST, label_ids=[2, 0]
    )
    assert row["reward_model"]["ground_truth"] == "atelectasis; effusion"
    assert row["extra_info"]["label_id"] == -1 and row["extra_info"]["label_ids"] == [0, 2]
    assert row["ability"] == "medical_image_classification"
    assert ground_truth_for([3], CHEST, True) == "no finding"


@pytest.mark.parametrize(
    "bad",
    [dict(label_ids=[2]), dict(domain="space"), dict(prompt_variant="fancy"), dict(label_ids=[0, 1])],
)
def test_make_row_refuses_bad_values(bad):
    with pytest.raises(ValueError):
        _row(**bad)


def test_plain_prompt_lists_classes_one_per_line_and_asks_for_think_answer():
    q = build_question(dataset="ucm", subject="an aerial scene", class_names=["a, b", "c"])
    assert "- a, b\n- c\n" in q
    assert "<think>" in q and "<answer>" in q and "Domain knowledge" not in q


def test_injection_prompt_adds_the_datasets_invariance():
    rs = build_question(dataset="ucm", subject="x", class_names=["a"], variant="injection")
    assert "Domain knowledge:" in rs and "rotation" in rs
    organ = build_question(dataset="medmnist/organamnist", subject="x", class_names=["a"], variant="injection")
    assert "left" in organ and "Domain knowledge:" in organ
    chest = build_question(dataset="medmnist/chestmnist", subject="x", class_names=CHEST, multi_label=True)
    assert "'no finding'" in chest and "separated by ';" in chest


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ("ucm", DIHEDRAL_NAMES),
        ("resisc45", DIHEDRAL_NAMES),
        ("s2_tiles", DIHEDRAL_NAMES),
        ("medmnist/pathmnist", (*DIHEDRAL_NAMES, "hed_jitter")),
        ("medmnist/bloodmnist", DIHEDRAL_NAMES),
        ("medmnist/dermamnist", DIHEDRAL_NAMES),
        ("medmnist/organamnist", ("identity", "vflip")),
        ("organcmnist", ("identity", "vflip")),
        ("medmnist/organsmnist", ("identity", "vflip")),
        ("medmnist/chestmnist", ("identity", "hflip")),
        ("medmnist/octmnist", ("identity", "hflip")),
        ("medmnist/breastmnist", ("identity", "hflip")),
    ],
)
def test_whitelists(dataset, expected):
    assert allowed_transforms(dataset) == tuple(expected)


def test_every_dataset_has_a_whitelist_and_left_right_subsets_never_hflip():
    names = set(known_datasets())
    flags = "path chest derma oct pneumonia retina breast blood tissue organa organc organs".split()
    assert {f"medmnist/{f}mnist" for f in flags} <= names
    assert {"ucm", "aid", "rsicd", "whu_rs19", "patternnet", "resisc45"} <= names
    for flag in ("organamnist", "organcmnist", "organsmnist"):
        assert not {"hflip", "rot90", "rot180", "rot270", "transpose", "transverse"} & set(allowed_transforms(flag))
    with pytest.raises(KeyError):
        allowed_transforms("mnist")


def test_every_whitelisted_name_is_a_registered_transform():
    # data_prep spells the names out (it imports no torch); they must be the registry's, else training refuses the rows
    assert ALL == DIHEDRAL_NAMES
    for dataset in known_datasets():
        check_transform_names(allowed_transforms(dataset), f"data_prep whitelist for {dataset}")


def test_data_prep_imports_neither_torch_nor_verl():
    # the CLI and every pool worker import data_prep; torch alone costs ~1.7 s and ~400 MiB per process
    import subprocess
    import sys

    code = "import sys, data_prep.__main__, data_prep.images; print(sorted({'torch', 'verl'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_readme_whitelist_table_matches_the_code():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "data_prep" / "README.md").read_text()
    table = text.split("## Transform whitelists")[1].split("## Images")[0]
    seen = set()
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("dataset", "---"):
            continue
        for name in cells[0].split(", "):
            dataset = name if "/" in name or not name.endswith("mnist") else f"medmnist/{name}"
            assert tuple(cells[1].split(", ")) == allowed_transforms(dataset), dataset
            seen.add(dataset)
    assert seen == set(known_datasets())
