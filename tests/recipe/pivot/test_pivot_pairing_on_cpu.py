"""The agent loop's choice of text per session, and the trainer mode's pairing of a TransferQueue batch."""

from __future__ import annotations

import pytest

from recipe.pivot.agent_loop import offline_text
from recipe.pivot.trainer import batch_pairs, pair_reward_metrics, reward_flags, split_key
from verl_ext.dpo import DPOConfig

ROW = {"chosen": "<answer>water</answer>", "rejected": "<answer>other</answer>", "extra_info": {"split": "train"}}


def _dpo(source, **pairs):
    return DPOConfig.from_dict({"pairs": {"source": source, **pairs}})


def test_offline_sessions_answer_chosen_then_rejected_and_the_rest_sample():
    dpo = _dpo("mixed")
    assert offline_text({**ROW, "session_id": 0}, dpo) == ("chosen", ROW["chosen"])
    assert offline_text({**ROW, "session_id": 1}, dpo) == ("rejected", ROW["rejected"])
    assert offline_text({**ROW, "session_id": 2}, dpo) == (None, None)  # sampled, paired online
    assert offline_text({**ROW, "session_id": 0}, _dpo("online")) == (None, None)
    validation = {**ROW, "extra_info": {"split": "test"}, "session_id": 0}
    assert offline_text(validation, _dpo("offline")) == (None, None)  # validation always generates
    assert offline_text({"session_id": 0, "extra_info": {"split": "train"}}, dpo) == (None, None)  # row without pair
    with pytest.raises(ValueError, match="dpo.pairs.source=offline but training row"):
        offline_text({"session_id": 0, "chosen": "x", "rejected": None, "extra_info": {"index": 3}}, _dpo("offline"))


def _extra(role="sampled", acc=0.0, fmt=1.0, valid=1.0):
    return {"dpo_role": role, "reward_extra_info": {"acc": acc, "format": fmt, "answer_valid": valid}}


def test_batch_pairs_sorts_sessions_and_maps_back_to_batch_order():
    # batch order is shuffled by verl's balancing; uid u1 offline (sessions 0/1), uid u2 online: s1 correct, s0 wrong
    keys = ["u2_1_0", "u1_1_0", "u2_0_0", "u1_0_0", "u2_2_0"]
    extras = [_extra(acc=1.0), _extra("rejected"), _extra(acc=0.0), _extra("chosen"), _extra(acc=0.0, fmt=0.0)]
    pairs = batch_pairs(keys, extras, [False] * 5, _dpo("mixed"))
    assert sorted(zip(pairs.chosen.tolist(), pairs.rejected.tolist(), pairs.offline.tolist())) == [
        (0, 2, False),  # u2: s1 (index 0) correct vs s0 (index 2) wrong; s2 is malformed: never a member
        (3, 1, True),  # u1: offline
    ]
    assert pair_reward_metrics(extras, pairs, "acc") == {"dpo/chosen_acc": 0.5, "dpo/rejected_acc": 0.0}
    assert split_key("a_b_c-1_3_0") == ("a_b_c-1", 3, 0)


def test_padding_is_never_paired_and_missing_reward_keys_are_named():
    keys = ["u_0_0", "u_1_0"]
    pairs = batch_pairs(keys, [_extra(acc=1.0), _extra(acc=0.0)], [False, True], _dpo("online"))
    assert len(pairs) == 0 and pairs.skipped_prompts == 1
    with pytest.raises(KeyError, match=r"reward keys \['acc', 'format', 'answer_valid'\]"):
        reward_flags({"reward_extra_info": {"score": 1.0}}, _dpo("online"))
    with pytest.raises(NotImplementedError, match="multi-output"):
        batch_pairs(["u_0_1"], [_extra()], [False], _dpo("online"))
