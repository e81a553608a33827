"""DPO as a verl policy gradient (verl_ext/dpo.py): hand-computed cases, and the gradient of verl's own `ppo_loss`
with the DPO advantages against the gradient of the DPO loss computed directly, in float64 on the tiny Qwen2.5-VL."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from verl_ext.dpo import (
    DPOConfig,
    DPOConfigError,
    compute_dpo_advantage,
    dpo_advantage_inputs,
    dpo_delta,
    dpo_loss,
    dpo_metrics,
    dpo_sample_coefficients,
    form_pairs,
    sequence_log_ratio,
)

REPO = Path(__file__).resolve().parents[2]
B = torch.tensor


def _pairs(roles, correct=None, well_formed=None, groups=None, **kw):
    n = len(roles)
    correct = B(correct if correct is not None else [False] * n)
    well_formed = B(well_formed if well_formed is not None else [True] * n)
    return form_pairs(groups or ["p"] * n, roles, correct, well_formed, **kw)


# --- pairing -------------------------------------------------------------------------------------------------------


def test_offline_pair_is_chosen_and_rejected_of_the_same_prompt():
    pairs = _pairs(["chosen", "rejected", "chosen", "rejected"], groups=["a", "a", "b", "b"])
    assert pairs.chosen.tolist() == [0, 2] and pairs.rejected.tolist() == [1, 3]
    assert pairs.offline.tolist() == [True, True] and pairs.online_prompts == 0


def test_online_pairs_correct_well_formed_against_wrong_well_formed_in_session_order():
    # prompt a: s0 wrong+formed, s1 correct+malformed (never a member), s2 correct+formed, s3 wrong+formed
    #   good = [2], bad = [0, 3] -> one pair (2, 0) with max_per_prompt = 1
    # prompt b: all wrong -> skipped
    roles = ["sampled"] * 6
    correct = [False, True, True, False, False, False]
    formed = [True, False, True, True, True, True]
    pairs = _pairs(roles, correct, formed, groups=["a", "a", "a", "a", "b", "b"])
    assert (pairs.chosen.tolist(), pairs.rejected.tolist()) == ([2], [0])
    assert (pairs.online_prompts, pairs.skipped_prompts) == (2, 1)
    # max_per_prompt = 2 on a prompt with 2 good / 2 bad: disjoint pairs (good[0], bad[0]), (good[1], bad[1])
    pairs = _pairs(["sampled"] * 4, [True, False, True, False], max_per_prompt=2)
    assert (pairs.chosen.tolist(), pairs.rejected.tolist()) == ([0, 2], [1, 3])


def test_mixed_prompt_and_padding_and_broken_offline():
    # a: offline pair (0, 1) + sampled 2 (correct) and 3 (wrong) -> one online pair (2, 3)
    # b: a chosen without its rejected (failed session) -> counted as broken, no pair
    # sample 5 is verl padding: never paired
    roles = ["chosen", "rejected", "sampled", "sampled", "chosen", "sampled"]
    pairs = _pairs(
        roles, [False, False, True, False, False, True], groups=["a"] * 4 + ["b", "a"], valid=B([1, 1, 1, 1, 1, 0])
    )
    assert pairs.chosen.tolist() == [0, 2] and pairs.rejected.tolist() == [1, 3]
    assert pairs.offline.tolist() == [True, False] and pairs.broken_offline == 1


def test_pairing_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown roles"):
        _pairs(["winner", "rejected"])
    with pytest.raises(ValueError, match="different lengths"):
        form_pairs(["a"], ["chosen", "rejected"], B([True]), B([True]))


# --- Δ, loss, coefficients, metrics (hand arithmetic) ---------------------------------------------------------------


def test_sequence_log_ratio_is_the_masked_token_sum():
    lp = B([[-1.0, -2.0, -9.0], [-0.5, -0.5, -0.5]])
    ref = B([[-1.5, -1.0, 0.0], [-1.0, -1.0, -1.0]])
    mask = B([[1, 1, 0], [1, 1, 1]])
    # row 0: (-1 + 1.5) + (-2 + 1) = -0.5 (third token masked); row 1: 3 * 0.5 = 1.5
    assert sequence_log_ratio(lp, ref, mask).tolist() == [-0.5, 1.5]


def test_coefficients_and_loss_by_hand():
    # one pair, Δ = 2, β = 0.5: βΔ = 1, loss = -log σ(1) = log(1 + e^-1) = 0.31326
    # coefficient = β σ(-βΔ) / N = 0.5 * σ(-1) / 1 = 0.5 * 0.268941 = 0.134471
    pairs = _pairs(["chosen", "rejected", "sampled"])
    log_ratio = B([1.5, -0.5, 7.0], dtype=torch.float64)
    delta = dpo_delta(log_ratio, pairs)
    assert delta.tolist() == [2.0]
    assert dpo_loss(delta, 0.5).item() == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-12)
    coef = dpo_sample_coefficients(delta, pairs, 0.5, 3)
    w = 0.5 / (1 + math.exp(1.0))
    assert coef.tolist() == pytest.approx([w, -w, 0.0], abs=1e-15)
    m = dpo_metrics(log_ratio, pairs, 0.5)
    # rewards r = β log-ratio: chosen 0.75, rejected -0.25, margin βΔ = 1, accuracy 1 (Δ > 0)
    assert (m["dpo/chosen_reward"], m["dpo/rejected_reward"], m["dpo/reward_margin"]) == (0.75, -0.25, 1.0)
    assert (m["dpo/accuracy"], m["dpo/pairs"], m["dpo/pairs_offline"]) == (1.0, 1.0, 1.0)


def test_no_pair_gives_zero_coefficients_and_nan_loss():
    pairs = _pairs(["sampled", "sampled"], [False, False])
    coef = dpo_sample_coefficients(dpo_delta(torch.zeros(2), pairs), pairs, 0.1, 2)
    assert coef.tolist() == [0.0, 0.0]
    m = dpo_metrics(torch.zeros(2), pairs, 0.1)
    assert math.isnan(m["dpo/loss"]) and m["dpo/prompts_skipped"] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coefficients_normalise_by_pairs_and_sum_to_zero(seed):
    g = torch.Generator().manual_seed(seed)
    n_prompts, n = 5, 4
    groups = [f"p{i // n}" for i in range(n_prompts * n)]
    correct = torch.rand(n_prompts * n, generator=g) > 0.5
    pairs = form_pairs(groups, ["sampled"] * len(groups), correct, torch.ones(len(groups), dtype=torch.bool))
    log_ratio = torch.randn(len(groups), generator=g, dtype=torch.float64)
    coef = dpo_sample_coefficients(dpo_delta(log_ratio, pairs), pairs, 0.1, len(groups))
    assert coef.sum().abs().item() < 1e-15  # +w and -w per pair
    if len(pairs):
        # each |coefficient| <= β σ(.) / N < β / N
        assert coef.abs().max().item() < 0.1 / len(pairs)


def test_estimator_spreads_coefficients_and_refuses_to_guess():
    mask = B([[1, 1, 0], [1, 0, 0]], dtype=torch.float32)
    with dpo_advantage_inputs(B([0.5, -0.25])):
        adv, ret = compute_dpo_advantage(torch.zeros_like(mask), mask)
    assert adv.tolist() == [[0.5, 0.5, 0.0], [-0.25, 0.0, 0.0]] and torch.equal(adv, ret)
    with pytest.raises(RuntimeError, match="trainer.v1.trainer_mode=dpo"):
        compute_dpo_advantage(torch.zeros_like(mask), mask)
    with dpo_advantage_inputs(B([0.5])), pytest.raises(ValueError, match="1 coefficients"):
        compute_dpo_advantage(torch.zeros_like(mask), mask)


def test_config_defaults_and_errors():
    cfg = DPOConfig.from_dict({})
    assert cfg.beta == 0.1 and cfg.pairs.source == "online" and cfg.skip_empty_update
    with pytest.raises(DPOConfigError, match="dpo.beta"):
        DPOConfig.from_dict({"beta": 0})
    with pytest.raises(DPOConfigError, match=r"dpo.pairs.source='both'"):
        DPOConfig.from_dict({"pairs": {"source": "both"}})
    with pytest.raises(DPOConfigError, match=r"dpo.pairs: unknown key\(s\) \['sauce'\]"):
        DPOConfig.from_dict({"pairs": {"sauce": "online"}})


# --- the equivalence through verl's ppo_loss, float64, tiny Qwen2.5-VL ---------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    from transformers import Qwen2_5_VLForConditionalGeneration

    from verl_ext.cpu.tiny_qwen25vl import build_config, build_processor, build_tokenizer

    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    config = build_config(tokenizer)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    policy = Qwen2_5_VLForConditionalGeneration(config).double()
    torch.manual_seed(1)
    ref = Qwen2_5_VLForConditionalGeneration(copy.deepcopy(config)).double().eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return policy, ref, processor, tokenizer


def _sequences(processor, tokenizer, texts: list[str]) -> list[dict]:
    """One (image, prompt, response) per text; images differ; responses end with the end-of-turn token."""
    rng = np.random.default_rng(0)
    out = []
    for i, text in enumerate(texts):
        image = Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8))
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"Which class? {i % 2}"}]}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        enc = processor(text=[prompt], images=[image], return_tensors="pt")
        response = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
        out.append({**enc, "prompt_ids": enc["input_ids"][0], "response_ids": torch.tensor(response)})
    return out


def _token_log_probs(model, seq: dict) -> torch.Tensor:
    """log p(x_{t+1} | x_<=t) for every position t of prompt + response, `[L]` (last position 0), as verl lays out."""
    ids = torch.cat([seq["prompt_ids"], seq["response_ids"]]).unsqueeze(0)  # [1, L]
    logits = model(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        pixel_values=seq["pixel_values"].double(),
        image_grid_thw=seq["image_grid_thw"],
    ).logits[0]  # [L, V]
    lp = torch.log_softmax(logits, dim=-1)[:-1].gather(-1, ids[0, 1:, None]).squeeze(-1)  # [L - 1]
    return torch.cat([lp, lp.new_zeros(1)])  # [L]


def _response_part(full: torch.Tensor, seq: dict) -> torch.Tensor:
    p, r = len(seq["prompt_ids"]), len(seq["response_ids"])
    return full[p - 1 : p - 1 + r]


def _actor_config():
    import sys

    from omegaconf import OmegaConf
    from verl.utils.config import omega_conf_to_dataclass

    sys.path.insert(0, str(REPO / "tests" / "recipe"))
    from launch_helpers import compose_run

    cfg = compose_run(
        ["actor_rollout_ref.model.path=/unused", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4"],
        REPO / "recipe/pivot/config",
        "pivot_dpo",
    )
    assert OmegaConf.select(cfg, "actor_rollout_ref.actor.loss_agg_mode") == "token-sum"
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def _verl_loss_batch(seqs, log_prob_values, old, ref, advantages, mask, global_batch_size):
    """The micro-batch layout verl's engine hands `ppo_loss` (no-padding nested tensors + global batch info)."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    def nested(rows):
        return torch.nested.nested_tensor(list(rows), layout=torch.jagged)

    lengths = [len(s["response_ids"]) for s in seqs]
    data = TensorDict(
        {
            "prompts": nested(s["prompt_ids"] for s in seqs),
            "responses": nested(s["response_ids"] for s in seqs),
            "response_mask": nested(mask[i, :n] for i, n in enumerate(lengths)),
            "old_log_probs": nested(old[i, :n] for i, n in enumerate(lengths)),
            "advantages": nested(advantages[i, :n] for i, n in enumerate(lengths)),
            "ref_log_prob": nested(ref[i, :n] for i, n in enumerate(lengths)),
        },
        batch_size=len(seqs),
    )
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=global_batch_size)
    return {"log_probs": log_prob_values}, data


def _padded(rows: list[torch.Tensor]) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)


def _dpo_gradients(tiny, texts, groups, roles, beta=0.1, modes=(False,)):
    """Direct ∇ of the mean DPO loss, and ∇ of verl's ppo_loss with the DPO advantages for each micro-batching mode
    (False: one micro-batch; True: one per sample), float64, same policy."""
    policy, ref, processor, tokenizer = tiny
    seqs = _sequences(processor, tokenizer, texts)
    params = [p for p in policy.parameters() if p.requires_grad]

    # direct: L = mean over pairs of -log σ(β[(log π - log π_ref)(y_c) - (log π - log π_ref)(y_r)])
    policy.zero_grad()
    full = [_token_log_probs(policy, s) for s in seqs]
    with torch.no_grad():
        ref_lp = [_response_part(_token_log_probs(ref, s), s) for s in seqs]
    seq_ratio = torch.stack([_response_part(f, s).sum() - r.sum() for f, s, r in zip(full, seqs, ref_lp)])
    pairs = form_pairs(groups, roles, torch.zeros(len(seqs), dtype=torch.bool), torch.ones(len(seqs), dtype=torch.bool))
    direct_loss = dpo_loss(dpo_delta(seq_ratio, pairs), beta).mean()
    direct_loss.backward()
    direct = [p.grad.detach().clone() for p in params]

    results = {}
    for per_sample in modes:
        results[per_sample] = _verl_gradients(policy, seqs, ref_lp, pairs, beta, per_sample)
    return direct, results, direct_loss.item()


def _verl_gradients(policy, seqs, ref_lp, pairs, beta, per_sample):
    """verl: old log-probs = the same weights, detached (ratio 1); advantages from the pure functions."""
    from verl.workers.utils.losses import ppo_loss

    params = [p for p in policy.parameters() if p.requires_grad]
    policy.zero_grad()
    full = [_token_log_probs(policy, s) for s in seqs]
    old = _padded([_response_part(f, s).detach() for f, s in zip(full, seqs)])  # [B, T]
    mask = _padded([torch.ones(len(s["response_ids"]), dtype=torch.float64) for s in seqs])  # [B, T]
    ref_padded = _padded(ref_lp)  # [B, T]
    log_ratio = sequence_log_ratio(old, ref_padded, mask)  # [B]
    coef = dpo_sample_coefficients(dpo_delta(log_ratio, pairs), pairs, beta, len(seqs))  # [B]
    with dpo_advantage_inputs(coef):
        advantages, _ = compute_dpo_advantage(torch.zeros_like(mask), mask)
    advantages = advantages.double()
    config = _actor_config()
    groups_of_rows = [[i] for i in range(len(seqs))] if per_sample else [list(range(len(seqs)))]
    for rows in groups_of_rows:  # one ppo_loss call per micro-batch, gradients accumulate as in verl's engine
        sub = [seqs[i] for i in rows]
        values = torch.cat([full[i] for i in rows])
        output, data = _verl_loss_batch(
            sub, values, old[rows], ref_padded[rows], advantages[rows], mask[rows], len(seqs)
        )
        loss, _ = ppo_loss(config, output, data)
        loss.backward(retain_graph=True)
    return [p.grad.detach().clone() for p in params]


def _rel_error(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    num = sum(((x - y) ** 2).sum() for x, y in zip(a, b)).sqrt()
    return (num / sum((x**2).sum() for x in a).sqrt()).item()


def test_verl_ppo_loss_gradient_equals_dpo_gradient_float64(tiny):
    # two prompts, each an offline pair; responses of different lengths; π and π_ref differ, so σ(-βΔ) != 1/2
    texts = ["<answer>water</answer>", "<answer>vegetation</answer>", "<answer>other</answer>", "no"]
    direct, via_verl, loss = _dpo_gradients(
        tiny, texts, ["a", "a", "b", "b"], ["chosen", "rejected", "chosen", "rejected"], modes=(False, True)
    )
    assert math.isfinite(loss) and loss != pytest.approx(math.log(2), abs=1e-6)
    assert sum((g**2).sum() for g in direct).item() > 0
    for per_sample, grads in via_verl.items():  # one micro-batch, and one micro-batch per sample (accumulated)
        err = _rel_error(direct, grads)
        assert err < 1e-13, f"per_sample={per_sample}: relative gradient error {err:.3e}"  # measured 2.8e-16
    # every part of the model gets the gradient, the vision encoder included
    names = [n for n, p in tiny[0].named_parameters() if p.requires_grad]
    grads = dict(zip(names, via_verl[False]))
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "visual.blocks" in n)
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "visual.merger" in n)


def test_chosen_equal_to_rejected_gives_exactly_zero_gradient(tiny):
    # the same image, prompt and response as chosen and rejected: Δ = 0, coefficients +β/2 and -β/2 on identical
    # sequences; each in its own micro-batch, the two backward passes give g and -g bit for bit (IEEE negation is
    # exact), so the accumulated gradient is exactly 0
    policy, ref, processor, tokenizer = tiny
    texts = ["<answer>water</answer>", "<answer>water</answer>"]
    orig = _sequences

    def same_image(processor, tokenizer, texts):
        seqs = orig(processor, tokenizer, texts[:1])
        return [seqs[0], {k: (v.clone() if torch.is_tensor(v) else v) for k, v in seqs[0].items()}]

    globals()["_sequences"] = same_image
    try:
        _, via_verl, _ = _dpo_gradients(tiny, texts, ["a", "a"], ["chosen", "rejected"], modes=(True, False))
    finally:
        globals()["_sequences"] = orig
    assert all(torch.equal(g, torch.zeros_like(g)) for g in via_verl[True])
    # in ONE micro-batch the two halves cancel inside the weight-gradient matmuls' sums: float64 rounding only
    assert max(g.abs().max().item() for g in via_verl[False]) < 1e-15
