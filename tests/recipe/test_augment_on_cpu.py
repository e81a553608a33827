"""grpo_da / oc agent-loop options, the OC reward and the SFT converter, without Ray."""

from __future__ import annotations

import asyncio
import io
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from launch_helpers import RS_WHITELIST, compose_run, write_rows
from PIL import Image

from data_prep.sft import answer_text, convert_rows
from recipe.domain_grpo import oc_reward
from recipe.domain_grpo.augment import (
    AgentExtrasConfigError,
    draw_for_sample,
    extras_from_config,
    is_training_sample,
    transform_images,
    validate_agent_extras,
)
from verl_ext.config import DomainConfig
from verl_ext.rewards import compute_score

VOCAB = ["beach", "forest", "harbor"]


def test_draw_uses_only_row_allowed_configured_transforms_and_is_deterministic():
    names = ["rot90", "rot180", "rot270", "vflip"]
    draws = [draw_for_sample(names, ["identity", "vflip"], 0, f"u{i}") for i in range(20)]
    assert set(draws) == {"vflip"}
    spread = Counter(draw_for_sample(names, RS_WHITELIST, 0, f"u{i}") for i in range(400))
    assert set(spread) == set(names) and min(spread.values()) > 60
    assert draw_for_sample(names, RS_WHITELIST, 0, "k") == draw_for_sample(names, RS_WHITELIST, 0, "k")
    with pytest.raises(AgentExtrasConfigError, match="none of domain.transforms.names"):
        draw_for_sample(["rot90"], ["identity", "vflip"], 0, "k")


def test_transform_images_rotates_every_image():
    image = Image.fromarray(np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3))
    out = transform_images([image, image], "rot90")
    assert [im.size for im in out] == [(6, 4), (6, 4)]
    assert np.array_equal(np.asarray(out[0]), np.rot90(np.asarray(image)))


def test_validation_rows_are_not_training_samples():
    assert is_training_sample({"extra_info": {"split": "train"}}) and is_training_sample({})
    assert not is_training_sample({"extra_info": {"split": "val"}})
    assert not is_training_sample({"validate": True, "extra_info": {"split": "train"}})


def test_extras_config_is_strict_and_checked_against_rows(tmp_path):
    train = write_rows(tmp_path / "organ.parquet", ["identity", "vflip"])
    config = compose_run(["method=grpo_da", f"data.train_files={train}"])
    with pytest.raises(AgentExtrasConfigError, match="training row 0 allows"):
        validate_agent_extras(config, [["identity", "vflip"]])
    validate_agent_extras(compose_run(["method=grpo_da", "domain.transforms.names=[vflip]"]), [["identity", "vflip"]])
    with pytest.raises(AgentExtrasConfigError, match="unknown key"):
        extras_from_config(compose_run(["method=grpo_da", "+domain_recipe.augment.typo=1"]))
    with pytest.raises(AgentExtrasConfigError, match="default_agent_loop=domain_single_turn_agent"):
        validate_agent_extras(compose_run(["method=grpo_da", "actor_rollout_ref.rollout.agent.default_agent_loop=x"]))
    with pytest.raises(AgentExtrasConfigError, match="oc_reward.py"):
        validate_agent_extras(compose_run(["method=oc", "reward.custom_reward_function.path=verl_ext/rewards.py"]))


async def _fixed_images(self, messages):
    """Stands in for verl's SingleTurnAgentLoop.process_multi_modal_info: one 4x2 image."""
    return {"images": [Image.new("RGB", (4, 2))]}


def test_agent_loop_swaps_images_before_generation_when_a_transform_is_drawn(monkeypatch):
    from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

    from recipe.domain_grpo.agent_loop import DomainSingleTurnAgentLoop

    monkeypatch.setattr(SingleTurnAgentLoop, "process_multi_modal_info", _fixed_images)
    loop = DomainSingleTurnAgentLoop.__new__(DomainSingleTurnAgentLoop)  # no verl worker needed for this method
    loop.domain = DomainConfig()
    loop._augment_name, loop._augment_seed = "rot90", 0
    assert asyncio.run(loop.process_multi_modal_info([]))["images"][0].size == (2, 4)
    loop._augment_name = None
    assert asyncio.run(loop.process_multi_modal_info([]))["images"][0].size == (4, 2)


def _info(transformed):
    return {"class_names": VOCAB, "oc_transformed_response": transformed}


def test_oc_reward_adds_weighted_agreement():
    good = "<think>sand</think><answer>beach</answer>"
    base = compute_score("ucm", good, "beach", {"class_names": VOCAB})["score"]
    agree = oc_reward.compute_score("ucm", good, "beach", _info(good), oc_weight=0.5)
    differ = oc_reward.compute_score("ucm", good, "beach", _info("<answer>forest</answer>"), oc_weight=0.5)
    val = oc_reward.compute_score("ucm", good, "beach", _info(None), oc_weight=0.5)
    assert agree["score"] == base + 0.5 and agree["oc_agreement"] == 1.0
    assert differ["score"] == base and val["score"] == base and val["oc_scored"] == 0.0
    assert set(agree) == set(val)  # verl logs the first sample's keys for the whole batch


def test_oc_reward_without_the_agent_loop_field_fails():
    with pytest.raises(KeyError, match="domain_recipe.oc.enable=true"):
        oc_reward.compute_score("ucm", "<answer>beach</answer>", "beach", {"class_names": VOCAB})


def _png(size=(6, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(size[0] * size[1] * 3, dtype=np.uint8).reshape(size[1], size[0], 3)).save(buffer, "PNG")
    return buffer.getvalue()


def _rl_row(index, whitelist):
    return {
        "data_source": "ucm",
        "prompt": [{"role": "user", "content": "<image>What is it?"}],
        "images": [{"bytes": _png(), "path": None}],
        "reward_model": {"style": "rule", "ground_truth": "beach"},
        "extra_info": {"index": index, "split": "train", "transforms": whitelist, "class_names": VOCAB},
    }


def test_sft_rows_answer_in_the_rewarded_format_and_augment_within_the_whitelist(tmp_path):
    rows = [_rl_row(0, RS_WHITELIST), _rl_row(1, ["identity", "vflip"])]
    plain = convert_rows(rows)
    assert [r["messages"][-1] for r in plain] == [{"role": "assistant", "content": answer_text("beach")}] * 2
    assert compute_score("ucm", answer_text("beach"), "beach", {"class_names": VOCAB})["score"] == 2.0
    augmented = convert_rows(rows, augment=True, copies=3, transforms=["rot90", "vflip"])
    assert len(augmented) == 8
    organ = [r["extra_info"]["sft_transform"] for r in augmented[4:]]
    assert organ == ["identity", "vflip", "vflip", "vflip"]
    flipped = Image.open(io.BytesIO(augmented[5]["images"][0]["bytes"]))
    assert np.array_equal(np.asarray(flipped), np.flipud(np.asarray(Image.open(io.BytesIO(_png())))))
    with pytest.raises(ValueError, match="none of --transforms"):
        convert_rows([_rl_row(0, ["identity", "hflip"])], augment=True, transforms=["rot90"])


def test_sft_cli_round_trip(tmp_path):
    from data_prep.sft import main

    pd.DataFrame([_rl_row(0, RS_WHITELIST)]).to_parquet(tmp_path / "rl.parquet")
    main(["--in", str(tmp_path / "rl.parquet"), "--out", str(tmp_path / "sft.parquet"), "--augment", "--copies", "2"])
    table = pd.read_parquet(tmp_path / "sft.parquet")
    assert len(table) == 3 and list(table.columns[:2]) == ["messages", "images"]


def test_sample_keys_are_reproducible_per_row_response_and_step():
    from recipe.domain_grpo.agent_loop import sample_key

    kwargs = {"data_source": "ucm", "extra_info": {"index": 7}, "session_id": 2, "global_steps": 5, "uid": "random"}
    # the uid (a fresh uuid per run) is not part of the key when the row has an index
    assert sample_key(kwargs, "view") == ("view:ucm:7_2", 5)
    assert sample_key(kwargs, "augment", per_response=False) == ("augment:ucm:7", 5)
    assert sample_key({"uid": "u1"}, "oc") == ("oc::u1_0", 0)
