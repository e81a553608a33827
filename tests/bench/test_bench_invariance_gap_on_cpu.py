"""bench/bench_invariance_gap.py: its commands (recorded, not run) and its report's arithmetic, checked by hand (the
gap's own arithmetic: tests/verl_ext/evaluation/test_view_gap_on_cpu.py)."""

from __future__ import annotations

import json

import pytest

from recipe.domain_grpo import demo_pipeline


def _recording_pipeline(tmp_path, argv):
    """The bench's pipeline for a command line, its steps recorded instead of run: (pipeline, [(name, argv)])."""
    from bench.bench_invariance_gap import build_parser, settings_from
    from recipe.domain_grpo.digits_base import DigitsPipeline

    pipe = DigitsPipeline(tmp_path / "t", settings_from(build_parser().parse_args(argv)))
    steps = []
    pipe.step = lambda name, argv, *a, **k: steps.append((name, [str(x) for x in argv]))  # record, run nothing
    pipe.train_rows = lambda: 754
    return pipe, steps


def test_sft_overrides_reach_verls_sft_command(tmp_path):
    # --sft-override goes through Settings.sft_overrides into the SFT step's argv (so into its step key)
    from recipe.domain_grpo.demo_pipeline import StepError

    argv = ["try", "--out", str(tmp_path), "--name", "t", "--sft-override", "optim.betas=[0.9,0.95]"]
    pipe, steps = _recording_pipeline(tmp_path, argv)
    with pytest.raises(StepError, match="saved no HF weights"):  # nothing ran: only the commands matter here
        pipe.sft_warm_start()
    sft = dict(steps)["sft"]
    assert "optim.betas=[0.9,0.95]" in sft
    assert "grpo_da" in demo_pipeline.VARIANTS and demo_pipeline.VARIANTS["grpo_da"]["method"] == "grpo_da"


def test_rl_overrides_reach_every_run_under_their_own_tag(tmp_path):
    # --rl-override goes through Settings.rl_overrides into each RL run's argv after the variant's own overrides (so
    # into its step key), and --rl-tag names the run folders, so runs with other settings never replace each other.
    from bench.bench_invariance_gap import build_parser, settings_from
    from recipe.domain_grpo.demo_pipeline import StepError

    argv = ["rl", "--out", str(tmp_path), "--rl-override", "domain.constraint.target=original", "--rl-tag", "tgt"]
    pipe, steps = _recording_pipeline(tmp_path, argv)
    with pytest.raises(StepError, match="saved no HF weights"):
        pipe.rl("dc_ans", 1, start=tmp_path / "warm")
    name, command = steps[0]
    assert name == "rl_dc_ans_seed1_steps16_tgt"
    assert command[-2:] == [demo_pipeline.ANSWER_SCOPE_DC, "domain.constraint.target=original"]
    # untagged overrides are refused (their runs would take the untagged runs' folders), and so is a tag that is not
    # a plain folder name
    with pytest.raises(SystemExit, match="rl_tag"):
        settings_from(build_parser().parse_args(["rl", "--rl-override", "domain.constraint.weight=2"]))
    with pytest.raises(ValueError, match="rl_tag"):
        demo_pipeline.Settings(rl_tag="../x")


def test_report_pools_seeds_only_under_one_tag(tmp_path):
    # Two records under one tag with different settings would be pooled as seeds of one experiment: refused.
    from bench.invariance_gap_report import rl_groups

    def run(tag, seed, lr):
        return {"rl_tag": tag, "variant": "grpo", "seed": seed, "settings": {"lr": lr}}

    # a run recorded twice (a rerun that skipped its steps) counts once
    groups = rl_groups([run("", 0, 1e-4), run("a", 0, 1e-3), run("a", 1, 1e-3), run("a", 0, 1e-3)])
    assert {tag: [r["seed"] for r in v["grpo"]] for tag, v in groups.items()} == {"": [0], "a": [1, 0]}
    with pytest.raises(SystemExit, match="'a' was recorded with other settings \\(\\['lr'\\]\\)"):
        rl_groups([run("a", 0, 1e-3), run("a", 1, 1e-4)])


def _eval_folder(out, name, views_by_image):
    """predictions.jsonl of one run: {image: {view: answer distribution over classes a, b}} (label a everywhere)."""
    folder = out / "tries" / "base" / "eval" / name
    folder.mkdir(parents=True)
    lines = []
    for index, views in views_by_image.items():
        for view, (pa, pb) in views.items():
            rec = {"index": index, "view": view, "label": "a", "prediction": "a" if pa >= pb else "b"}
            lines.append(json.dumps({**rec, "answer_distribution": {"a": pa, "b": pb}}))
    (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n")


def test_js_ratio_against_grpo_by_hand(tmp_path):
    # grpo: both images answer (1, 0) upright and (0, 1) turned: JS 1 bit each, mean 1.
    # dc: image 0 turned (0.5, 0.5): JS = ½·log2(4/3) + ½·(½·log2(2/3) + ½·1) = 0.20752 + 0.10376 = 0.31128;
    # image 1 turned (1, 0): 0. Mean 0.15564, ratio 0.15564 / 1.
    from bench.invariance_gap_report import js_vs_grpo

    _eval_folder(
        tmp_path,
        "grpo_seed0_steps16",
        {0: {"identity": (1, 0), "rot90": (0, 1)}, 1: {"identity": (1, 0), "rot90": (0, 1)}},
    )
    _eval_folder(
        tmp_path,
        "dc_seed0_steps16",
        {0: {"identity": (1, 0), "rot90": (0.5, 0.5)}, 1: {"identity": (1, 0), "rot90": (1, 0)}},
    )

    def record(variant, images=(0, 1)):
        return {"variant": variant, "seed": 0, "base": "base", "settings": {"rl_steps": 16}, "images": list(images)}

    result = js_vs_grpo(tmp_path, [record("dc")], [record("grpo")])
    assert result["ratio"] == pytest.approx(0.31128 / 2, abs=1e-5)
    assert result["n_images"] == 2
    # the join is by image id: a record naming other images than its evaluation folder is refused
    with pytest.raises(SystemExit, match="other images"):
        js_vs_grpo(tmp_path, [record("dc", images=(0, 2))], [record("grpo")])
    with pytest.raises(SystemExit, match="missing"):
        js_vs_grpo(tmp_path, [{**record("dc"), "seed": 0, "rl_tag": "x"}], [record("grpo")])


def test_accuracy_pairs_only_runs_on_the_same_images():
    # paired_vs_grpo joins the per-image lists by position, so two runs on other images are refused, not paired
    from bench.invariance_gap_report import paired_vs_grpo

    def run(variant, images, correct):
        return {"variant": variant, "seed": 0, "images": images, "per_image_transformed": correct}

    same = paired_vs_grpo([run("dc", [1, 2], [1.0, 0.0])], [run("grpo", [1, 2], [0.0, 0.0])])
    assert same["delta"] == pytest.approx(0.5)  # (1 + 0) / 2 − (0 + 0) / 2
    with pytest.raises(SystemExit, match="other images"):
        paired_vs_grpo([run("dc", [1, 3], [1.0, 0.0])], [run("grpo", [1, 2], [0.0, 0.0])])
