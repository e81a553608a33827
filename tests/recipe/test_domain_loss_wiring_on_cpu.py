"""The worker's DomainLoss without Ray: a fake engine returns known logits for the transformed view.

Checks the wiring a loop run cannot isolate: the divergence is D(transformed ‖ original) on exactly the positions whose
logits predict response tokens (verl's layout: position i predicts token i + 1), the micro-batch handed to the engine
carries the transformed view's inputs, and the DC term is added to verl's ppo_loss with the configured weight.
"""

from types import SimpleNamespace

import torch
from tensordict import TensorDict
from tensordict.tensorclass import NonTensorStack
from verl.utils import tensordict_utils as tu

from recipe.domain_grpo.micro_batch import per_sample_values
from recipe.domain_grpo.worker import DIVERGENCE_KEY, PASS_KEY, DomainLoss
from verl_ext.config import DomainConfig
from verl_ext.divergences import full_vocab_divergence

VOCAB = 7
PROMPT, RESPONSE = [3, 2], [2, 3]  # per sample: prompt and response lengths


class FakeEngine:
    """Records the micro-batch it is given and returns fixed 'transformed view' logits through verl's hook."""

    def __init__(self, *logits: torch.Tensor) -> None:
        self.logits, self.seen, self.calls = logits, None, 0

    def prepare_model_inputs(self, micro_batch):
        self.seen = micro_batch
        return {}, {}

    def module(self, **kwargs):
        return SimpleNamespace()

    def prepare_model_outputs(self, output, output_args, micro_batch, logits_processor_func):
        logits_processor_func(student_logits=self.logits[self.calls % len(self.logits)], data=micro_batch)
        self.calls += 1
        return {}


def _nested(rows):
    return torch.nested.as_nested_tensor([torch.as_tensor(r) for r in rows], layout=torch.jagged)


def _micro_batch() -> TensorDict:
    lengths = [p + r for p, r in zip(PROMPT, RESPONSE)]
    views = [
        {
            "transform": "rot90",
            "pixel_values": torch.full((4, 3), float(i)),
            "image_grid_thw": torch.tensor([[1, 2, 2]]),
            "position_ids": torch.arange(4 * n).view(4, n),
        }
        for i, n in enumerate(lengths)
    ]
    data = TensorDict(
        {
            "input_ids": _nested([torch.arange(n) for n in lengths]),
            "prompts": _nested([torch.arange(p) for p in PROMPT]),
            "responses": _nested([torch.arange(r) for r in RESPONSE]),
            "response_mask": _nested([torch.ones(r) for r in RESPONSE]),
            "position_ids": torch.nested.nested_tensor_from_jagged(
                torch.zeros(4, sum(lengths), dtype=torch.long), torch.tensor([0, *lengths]).cumsum(0), jagged_dim=2
            ),
        },
        batch_size=[2],
    )
    data["multi_modal_inputs"] = NonTensorStack(
        {"pixel_values": torch.zeros(4, 3)}, {"pixel_values": torch.zeros(4, 3)}
    )
    data["extra_fields"] = NonTensorStack(*[{"domain_view": [v]} for v in views])
    return data


def test_consistency_pass_compares_views_on_response_positions_only():
    nnz = sum(PROMPT) + sum(RESPONSE)  # 10 packed tokens
    gen = torch.Generator().manual_seed(0)
    original = torch.randn(1, nnz, VOCAB, generator=gen)
    transformed = torch.randn(1, nnz, VOCAB, generator=gen)
    engine = FakeEngine(transformed)
    loss = DomainLoss(SimpleNamespace(), DomainConfig(), engine)
    data = _micro_batch()
    tu.assign_non_tensor(data, **{PASS_KEY: "consistency"})
    out = loss(student_logits=original, data=data)[DIVERGENCE_KEY]  # (1, nnz)
    # Sample 0 occupies packed positions 0..4 (prompt 3, response 2): its response tokens are predicted at 2 and 3.
    # Sample 1 occupies 5..9 (prompt 2, response 3): predicted at 6, 7 and 8.
    expected_positions = [2, 3, 6, 7, 8]
    mask = torch.zeros(1, nnz, dtype=torch.bool)
    mask[0, expected_positions] = True
    expected = full_vocab_divergence(transformed, original, mask, "js")  # D_JS(transformed ‖ original)
    torch.testing.assert_close(out, expected.float())
    assert (out[0, expected_positions] > 0).all() and (out[~mask] == 0).all()
    # the engine ran on the transformed view: its pixels and position ids, not the original ones
    seen_mm = per_sample_values(engine.seen["multi_modal_inputs"])
    assert [float(m["pixel_values"][0, 0]) for m in seen_mm] == [0.0, 1.0]
    assert torch.equal(engine.seen["position_ids"].unbind()[1], torch.arange(20).view(4, 5))


def test_constraint_pass_adds_weighted_divergence_to_ppo_loss(monkeypatch):
    import recipe.domain_grpo.worker as worker

    def fake_ppo_loss(config, model_output, data, dp_group):
        from verl.utils.metric import AggregationType, Metric

        return torch.tensor(0.5), {"actor/pg_loss": Metric(value=0.5, aggregation=AggregationType.MEAN)}

    monkeypatch.setattr(worker, "ppo_loss", fake_ppo_loss)
    config = SimpleNamespace(loss_agg_mode="token-mean", global_batch_info={})
    loss_fn = DomainLoss(config, DomainConfig.from_dict({"constraint": {"weight": 2.0}}), engine=None)
    data = _micro_batch()
    tu.assign_non_tensor(data, **{PASS_KEY: "constraint"})
    # per-token divergence in verl's packed layout: response values 0.1, 0.3 (sample 0) and 0.2, 0.2, 0.2 (sample 1)
    packed = torch.tensor([9.0, 9.0, 0.1, 0.3, 9.0, 9.0, 0.2, 0.2, 0.2, 9.0])
    model_output = {DIVERGENCE_KEY: torch.nested.nested_tensor_from_jagged(packed, torch.tensor([0, 5, 10]))}
    loss, metrics = loss_fn(model_output=model_output, data=data, dp_group=None)
    # token-mean over the 5 response tokens: (0.1 + 0.3 + 0.2 * 3) / 5 = 0.2; loss = 0.5 + 2.0 * 0.2 = 0.9
    assert loss.item() == torch.tensor(0.9).item()
    assert abs(metrics["actor/domain_loss"].aggregate() - 0.2) < 1e-6


def test_sampled_token_estimate_uses_the_next_token_of_each_position():
    nnz = sum(PROMPT) + sum(RESPONSE)
    gen = torch.Generator().manual_seed(1)
    original = torch.randn(1, nnz, VOCAB, generator=gen)
    transformed = torch.randn(1, nnz, VOCAB, generator=gen)
    domain = DomainConfig.from_dict({"shaping": {"estimator": "k1", "divergence": "kl"}})
    loss = DomainLoss(SimpleNamespace(), domain, FakeEngine(transformed))
    data = _micro_batch()
    tu.assign_non_tensor(data, **{PASS_KEY: "consistency"})
    out = loss(student_logits=original, data=data)[DIVERGENCE_KEY][0]  # (nnz,)
    # packed input ids: sample 0 = 0..4, sample 1 = 0..4; position i is scored on the token at i + 1
    tokens = torch.cat([torch.arange(5), torch.arange(5)])
    for position in (2, 3, 6, 7, 8):
        label = tokens[position + 1]
        k1 = transformed[0, position].log_softmax(-1)[label] - original[0, position].log_softmax(-1)[label]
        assert abs(out[position].item() - k1.item()) < 1e-5
    assert out[[0, 1, 4, 5, 9]].abs().max() == 0


def test_mixture_mode_averages_the_divergence_over_every_view():
    nnz = sum(PROMPT) + sum(RESPONSE)
    gen = torch.Generator().manual_seed(2)
    original, view_a, view_b = (torch.randn(1, nnz, VOCAB, generator=gen) for _ in range(3))
    engine = FakeEngine(view_a, view_b)
    loss = DomainLoss(SimpleNamespace(), DomainConfig.from_dict({"transforms": {"mode": "mixture"}}), engine)
    data = _micro_batch()
    per_sample = [extra["domain_view"] for extra in per_sample_values(data["extra_fields"])]
    data["extra_fields"] = NonTensorStack(*[{"domain_view": views + views} for views in per_sample])  # 2 views each
    tu.assign_non_tensor(data, **{PASS_KEY: "consistency"})
    out = loss(student_logits=original, data=data)[DIVERGENCE_KEY]
    mask = torch.zeros(1, nnz, dtype=torch.bool)
    mask[0, [2, 3, 6, 7, 8]] = True
    expected = full_vocab_divergence(view_a, original, mask, "js") + full_vocab_divergence(view_b, original, mask, "js")
    torch.testing.assert_close(out, (expected / 2).float())
    assert engine.calls == 2
