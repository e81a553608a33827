"""The demo's first line and gap table (recipe/domain_grpo/demo_report.py): what each interval shows, by hand."""

from __future__ import annotations

from recipe.domain_grpo.demo_report import gap_table, headline


def _stat(value, low, high):
    return {"value": value, "ci_low": low, "ci_high": high}


def _paired(ratio, lo, hi, delta, dlo, dhi):
    js = {"ratio": ratio, "ratio_low": lo, "ratio_high": hi, "n_images": 120}
    return {"js": js, "accuracy_transformed": {"delta": delta, "delta_low": dlo, "delta_high": dhi}}


def test_headline_says_which_intervals_exclude_no_change():
    gap = {"gap": _stat(0.395, 0.319, 0.473)}
    line = headline(gap, _paired(0.65, 0.64, 0.66, -0.007, -0.023, 0.008), "dc_dr", "grpo")
    assert line.startswith("Tiny CPU model, one seed: a check of the machinery")
    assert "gap is +0.395 [+0.319, +0.473] (excludes 0)" in line
    assert "cross-view JS is 0.65 x [0.64, 0.66] (excludes 1)" in line
    assert "changes by -0.007 [-0.023, +0.008] (contains 0)" in line
    # an interval that straddles the null: "contains"; one that touches it counts as containing it
    line = headline({"gap": _stat(0.1, 0.0, 0.2)}, _paired(0.9, 0.7, 1.2, 0.02, 0.01, 0.03), "dc_dr", "grpo")
    assert "(contains 0). Against" in line and "(contains 1)" in line and "(excludes 0)." in line
    nan = float("nan")
    line = headline({"gap": _stat(0.1, 0.0, 0.2)}, _paired(nan, nan, nan, 0.0, 0.0, 0.0), "dc_dr", "grpo")
    assert "(no interval)" in line


def test_gap_table_rows():
    g = {"n_images": 2, "accuracy": {"identity": 1.0}, "transformed": _stat(0.25, 0.0, 0.5), "gap": _stat(0.75, 0.5, 1)}
    table = gap_table({"base": g}, {"base": "upright-SFT base"})
    assert table.splitlines()[-1] == "| upright-SFT base | 2 | 1.000 | 0.250 [0.000, 0.500] | +0.750 [+0.500, +1.000] |"
