"""rows_to_table (the column-wise conversion with repeated constant fields) against pyarrow's own from_pylist."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from data_prep.schema import ARROW_SCHEMA, make_row
from data_prep.writer import rows_to_table

CLASSES = ["forest", "river", "beach", "dense residential"]


def _row(rng: random.Random, i: int, vary: bool) -> dict:
    multi = vary and rng.random() < 0.5
    labels = rng.sample(range(len(CLASSES)), rng.randint(1, 3)) if multi else [rng.randrange(len(CLASSES))]
    return make_row(
        data_source="ucm",
        question="Which class?" + ("x" * rng.randrange(3) if vary else ""),  # the prompt constant or not
        image_bytes=bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40))),
        image_path=None if rng.random() < 0.3 else f"c/{i}.jpg",  # None among strings
        domain="remote_sensing",
        label_ids=labels,
        class_names=CLASSES if not vary or rng.random() < 0.7 else CLASSES[::-1],
        multi_label=multi,
        transforms=("identity", "rot90") if not vary or rng.random() < 0.5 else ("identity",),
        prompt_variant="plain",
        split=rng.choice(["train", "val"]),
        index=i,
        source_path=f"c/{i}.jpg",
    )


@pytest.mark.parametrize("vary", [False, True])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 64])
def test_rows_to_table_equals_from_pylist(n, vary):
    rng = random.Random(n * 2 + vary)
    rows = [_row(rng, i, vary) for i in range(n)]
    fast = rows_to_table(rows)
    assert fast.schema == ARROW_SCHEMA
    assert fast.equals(pa.Table.from_pylist(rows, schema=ARROW_SCHEMA))
    assert fast.to_pylist() == rows


def test_a_constant_column_is_repeated_not_shared_wrongly():
    # two rows with the same class list but different labels: the repeated class list must not leak into label_ids
    rng = random.Random(0)
    rows = [_row(rng, i, vary=False) for i in range(3)]
    rows[1]["extra_info"]["label_ids"] = [3]
    out = rows_to_table(rows).to_pylist()
    assert [r["extra_info"]["label_ids"] for r in out] == [r["extra_info"]["label_ids"] for r in rows]
    assert all(r["extra_info"]["class_names"] == CLASSES for r in out)
