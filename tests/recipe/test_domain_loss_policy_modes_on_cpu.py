"""DC beside verl's registered policy losses: the worker's DomainLoss adds λ · D to whatever verl's ppo_loss computes.

verl's `ppo_loss` dispatches on `actor.policy_loss.loss_mode` (and aggregates with `actor.loss_agg_mode`); DomainLoss
calls it unchanged. For each tested combination (vanilla GRPO, GSPO, DAPO's clip-higher, Dr.GRPO's aggregation):
with the DC term off the loss is verl's own bit for bit, and with it on the loss is verl's plus λ times the
aggregated divergence.
"""

from functools import partial

import pytest
import torch
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import agg_loss
from verl.utils import tensordict_utils as tu
from verl.workers.config import FSDPActorConfig, PolicyLossConfig
from verl.workers.utils.losses import ppo_loss

from recipe.domain_grpo.keys import DIVERGENCE_FIELD as DIVERGENCE_KEY
from recipe.domain_grpo.keys import PASS_KEY, SCOPE_FIELD
from recipe.domain_grpo.worker import DomainLoss
from verl_ext.config import DomainConfig

PROMPT, RESPONSE = [3, 2], [2, 3]  # per sample: prompt and response lengths; 10 packed tokens
# (name, loss_mode, loss_agg_mode, clip_ratio_high): the policy-loss settings of each verl algorithm tested here.
COMBINATIONS = [
    ("grpo", "vanilla", "token-mean", 0.2),
    ("gspo", "gspo", "token-mean", 0.2),
    ("dapo", "vanilla", "token-mean", 0.28),  # DAPO's clip-higher
    ("dr_grpo", "vanilla", "seq-mean-token-sum-norm", 0.2),
]


def _nested(rows):
    return torch.nested.as_nested_tensor([torch.as_tensor(r, dtype=torch.float32) for r in rows], layout=torch.jagged)


def _packed(values: torch.Tensor) -> torch.Tensor:
    """`(10,)` per-token values in verl's packed layout -> nested `[2, j]` (the model output's layout)."""
    lengths = torch.tensor([p + r for p, r in zip(PROMPT, RESPONSE)])
    return torch.nested.nested_tensor_from_jagged(
        values, torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    )


def _actor_config(loss_mode: str, loss_agg_mode: str, clip_ratio_high: float) -> FSDPActorConfig:
    return FSDPActorConfig(
        rollout_n=2,
        ppo_micro_batch_size_per_gpu=2,
        loss_agg_mode=loss_agg_mode,
        clip_ratio_high=clip_ratio_high,
        policy_loss=PolicyLossConfig(loss_mode=loss_mode),
    )


def _micro_batch(domain_pass: str | None) -> TensorDict:
    data = TensorDict(
        {
            "prompts": _nested([torch.zeros(p) for p in PROMPT]),
            "responses": _nested([torch.zeros(r) for r in RESPONSE]),
            "response_mask": _nested([torch.ones(r) for r in RESPONSE]),
            "old_log_probs": _nested([[-1.0, -1.0], [-0.5, -0.5, -0.5]]),
            "advantages": _nested([torch.full((2,), 1.5), torch.full((3,), -0.5)]),
        },
        batch_size=[2],
    )
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=None, global_batch_size=None)
    if domain_pass is not None:
        tu.assign_non_tensor(data, **{PASS_KEY: domain_pass})
    return data


def _model_output() -> dict:
    # Current log-probs, packed; on the response positions (2, 3 | 6, 7, 8) the ratios to the old ones are
    # exp(0.25) = 1.284 (clipped at 1.2 by vanilla, at 1.28 by DAPO's clip-higher), exp(0.1) | exp(-0.1), exp(0.1), 1;
    # GSPO clips the sequence-level ratio instead.
    log_probs = torch.tensor([0.0, 0.0, -0.75, -0.9, 0.0, 0.0, -0.6, -0.4, -0.5, 0.0])
    # DC's per-token divergence, packed: response values 0.1, 0.3 (sample 0, positions 2, 3) and 0.2 x 3 (6, 7, 8)
    divergence = torch.tensor([9.0, 9.0, 0.1, 0.3, 9.0, 9.0, 0.2, 0.2, 0.2, 9.0])
    scope = (divergence != 9.0).float()  # the response positions (scope=response)
    return {"log_probs": _packed(log_probs), DIVERGENCE_KEY: _packed(divergence), SCOPE_FIELD: _packed(scope)}


class _EveryoneHasAView:
    """Stands in for the view builder: both samples of the micro-batch got their transformed view."""

    def validity(self, data: TensorDict) -> list[list[bool]]:
        return [[True] * len(RESPONSE)]  # [views=1][bsz]


def _domain_loss(loss_mode: str, agg: str, clip_high: float, domain: dict) -> DomainLoss:
    """DomainLoss on verl's own `partial(ppo_loss, config=...)`, as the worker builds it."""
    base = partial(ppo_loss, config=_actor_config(loss_mode, agg, clip_high))
    return DomainLoss(base, DomainConfig.from_dict(domain), engine=None, views=_EveryoneHasAView())


@pytest.mark.parametrize(("name", "loss_mode", "agg", "clip_high"), COMBINATIONS)
def test_dc_term_is_added_to_each_verl_policy_loss(name, loss_mode, agg, clip_high):
    verl_loss, verl_metrics = ppo_loss(_actor_config(loss_mode, agg, clip_high), _model_output(), _micro_batch(None))

    # DC off: the worker does not mark the update pass, and DomainLoss returns verl's ppo_loss as it is.
    off = _domain_loss(loss_mode, agg, clip_high, {})
    loss_off, metrics_off = off(model_output=_model_output(), data=_micro_batch(None), dp_group=None)
    assert torch.equal(loss_off, verl_loss)
    assert "actor/domain_loss" not in metrics_off and set(metrics_off) == set(verl_metrics)

    # λ = 0 on a marked pass: still verl's loss bit for bit.
    zero = _domain_loss(loss_mode, agg, clip_high, {"constraint": {"weight": 0}})
    loss_zero, _ = zero(model_output=_model_output(), data=_micro_batch("constraint"), dp_group=None)
    assert torch.equal(loss_zero, verl_loss)

    # DC on, λ = 0.5: verl's loss + 0.5 · agg(divergence over the response tokens) in the actor's aggregation.
    on = _domain_loss(loss_mode, agg, clip_high, {"constraint": {"weight": 0.5}})
    loss_on, metrics_on = on(model_output=_model_output(), data=_micro_batch("constraint"), dp_group=None)
    per_token = torch.tensor([[0.1, 0.3, 0.0], [0.2, 0.2, 0.2]])  # [bsz, max_response_len]
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    divergence = agg_loss(per_token, mask, agg, dp_size=1, batch_num_tokens=None, global_batch_size=None)
    if agg == "token-mean":  # (0.1 + 0.3 + 0.2 * 3) / 5 response tokens = 0.2
        assert divergence.item() == pytest.approx(0.2)
    torch.testing.assert_close(loss_on, verl_loss + 0.5 * divergence)
    assert metrics_on["actor/domain_loss"].aggregate() == pytest.approx(divergence.item())
    assert metrics_on["actor/domain_no_view_share"].aggregate() == 0.0  # both samples had a view


def test_the_policy_loss_really_differs_between_modes():
    # The combinations above are not one loss under several names: verl's dispatch gives different values.
    losses = {
        name: ppo_loss(_actor_config(m, a, c), _model_output(), _micro_batch(None))[0] for name, m, a, c in COMBINATIONS
    }
    assert len({round(v.item(), 6) for v in losses.values()}) == len(COMBINATIONS), losses
