"""The worker's DomainLoss without Ray: a fake engine returns known logits for the transformed view.

Checks the wiring a loop run cannot isolate: the divergence is D(transformed ‖ original) on exactly the positions whose
logits predict response tokens (verl's layout: position i predicts token i + 1), the micro-batch handed to the engine
carries the transformed view's inputs (built from the sample's own pixels), rows without an image (verl's padding
rows) keep their inputs and add nothing, and the DC term is added to verl's ppo_loss with the configured weight.
"""

from functools import partial
from types import SimpleNamespace

import pytest
import torch
from tensordict import TensorDict
from tensordict.tensorclass import NonTensorStack
from verl.utils import tensordict_utils as tu

from recipe.domain_grpo.keys import DIVERGENCE_FIELD as DIVERGENCE_KEY
from recipe.domain_grpo.keys import PASS_KEY, SCOPE_FIELD
from recipe.domain_grpo.micro_batch import ViewBuilder, per_sample_values
from recipe.domain_grpo.worker import DomainLoss
from verl_ext.config import DomainConfig
from verl_ext.divergences import full_vocab_divergence
from verl_ext.views import PatchLayout

VOCAB = 7
IMAGE_TOKEN = 6  # the one image token of each prompt (a 2 × 2 patch grid merged 2 × 2)
PROMPT, RESPONSE = [3, 2], [2, 3]  # per sample: prompt and response lengths
# Tiny patch geometry: 2-px patches, no temporal duplication, merge 2, 3 channels -> rows of 3 · 1 · 2 · 2 = 12 values.
LAYOUT = PatchLayout(patch_size=2, temporal_patch_size=1, merge_size=2, image_mean=(0.0,) * 3, image_std=(1.0,) * 3)


def _no_base(**kwargs):
    raise AssertionError("verl's loss is not called on these passes")


NO_BASE = partial(_no_base, config=SimpleNamespace())


def _views() -> ViewBuilder:
    def no_rope(**kwargs):  # a 90° turn of a square grid keeps the grid: the position ids are never recomputed
        raise AssertionError("get_rope_index called for an unchanged grid")

    return ViewBuilder(LAYOUT, no_rope, IMAGE_TOKEN)


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
        # `* 1.0` inside the worker's grad context: no graph to the view's logits when the pass wants none
        logits_processor_func(student_logits=self.logits[self.calls % len(self.logits)] * 1.0, data=micro_batch)
        self.calls += 1
        return {}


def _nested(rows):
    return torch.nested.as_nested_tensor([torch.as_tensor(r) for r in rows], layout=torch.jagged)


def _patches(image: torch.Tensor) -> torch.Tensor:
    """The processor's patch order, written as loops: `image` `[3, 4, 4]` -> `[4, 12]`.

    Rows = (block row, block col, row in block, col in block) of 2-px patches in 2 × 2 merge blocks; columns =
    (channel, y in patch, x in patch).
    """
    rows = []
    for block_row in range(1):
        for block_col in range(1):
            for in_row in range(2):
                for in_col in range(2):
                    y0, x0 = 2 * (2 * block_row + in_row), 2 * (2 * block_col + in_col)
                    rows.append(image[:, y0 : y0 + 2, x0 : x0 + 2].reshape(-1))  # (c, py, px)
    return torch.stack(rows)


def _image(i: int) -> torch.Tensor:
    return torch.arange(48, dtype=torch.float32).view(3, 4, 4) + 100 * i  # [3, 4, 4]


def _pixels(i: int) -> torch.Tensor:
    """Sample i's processed image: a 4 × 4 RGB image as 4 patches of 12 values (grid 1 × 2 × 2)."""
    return _patches(_image(i))


def _input_ids(n: int) -> torch.Tensor:
    ids = torch.arange(n) % 5  # token ids 0..4, never the image token
    ids[1] = IMAGE_TOKEN
    return ids


def _micro_batch(views_per_sample: int = 1) -> TensorDict:
    lengths = [p + r for p, r in zip(PROMPT, RESPONSE)]
    views = [{"transform": "rot90", "seed": 0}] * views_per_sample
    data = TensorDict(
        {
            "input_ids": _nested([_input_ids(n) for n in lengths]),
            "prompts": _nested([torch.arange(p) for p in PROMPT]),
            "responses": _nested([torch.arange(r) for r in RESPONSE]),
            "response_mask": _nested([torch.ones(r) for r in RESPONSE]),
            "position_ids": torch.nested.nested_tensor_from_jagged(
                torch.arange(4 * sum(lengths)).view(4, -1), torch.tensor([0, *lengths]).cumsum(0), jagged_dim=2
            ),
        },
        batch_size=[2],
    )
    grid = torch.tensor([[1, 2, 2]])
    data["multi_modal_inputs"] = NonTensorStack(*[{"pixel_values": _pixels(i), "image_grid_thw": grid} for i in (0, 1)])
    data["extra_fields"] = NonTensorStack(*[{"domain_view": views} for _ in (0, 1)])
    return data


def test_consistency_pass_compares_views_on_response_positions_only():
    nnz = sum(PROMPT) + sum(RESPONSE)  # 10 packed tokens
    gen = torch.Generator().manual_seed(0)
    original = torch.randn(1, nnz, VOCAB, generator=gen)
    transformed = torch.randn(1, nnz, VOCAB, generator=gen)
    engine = FakeEngine(transformed)
    loss = DomainLoss(NO_BASE, DomainConfig(), engine, views=_views())
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
    # the engine ran on the transformed view, built from each sample's own pixels: the 4 × 4 image turned by 90°
    seen_mm = per_sample_values(engine.seen["multi_modal_inputs"])
    for i, mm in enumerate(seen_mm):
        assert torch.equal(mm["pixel_values"], _patches(torch.rot90(_image(i), 1, dims=(-2, -1))))
        assert torch.equal(mm["image_grid_thw"], torch.tensor([[1, 2, 2]]))
    # unchanged grid: the original's position ids are reused
    assert torch.equal(engine.seen["position_ids"].values(), _micro_batch()["position_ids"].values())


def test_constraint_pass_adds_weighted_divergence_to_ppo_loss():
    def fake_ppo_loss(config, model_output, data, dp_group):
        from verl.utils.metric import AggregationType, Metric

        return torch.tensor(0.5), {"actor/pg_loss": Metric(value=0.5, aggregation=AggregationType.MEAN)}

    config = SimpleNamespace(loss_agg_mode="token-mean", global_batch_info={})
    domain = DomainConfig.from_dict({"constraint": {"weight": 2.0}})
    loss_fn = DomainLoss(partial(fake_ppo_loss, config=config), domain, engine=None, views=_views())
    data = _micro_batch()
    tu.assign_non_tensor(data, **{PASS_KEY: "constraint"})
    # per-token divergence in verl's packed layout: response values 0.1, 0.3 (sample 0) and 0.2, 0.2, 0.2 (sample 1)
    packed = torch.tensor([9.0, 9.0, 0.1, 0.3, 9.0, 9.0, 0.2, 0.2, 0.2, 9.0])
    scope = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0])  # every response position in scope
    offsets = torch.tensor([0, 5, 10])
    model_output = {
        DIVERGENCE_KEY: torch.nested.nested_tensor_from_jagged(packed, offsets),
        SCOPE_FIELD: torch.nested.nested_tensor_from_jagged(scope, offsets),
    }
    loss, metrics = loss_fn(model_output=model_output, data=data, dp_group=None)
    # token-mean over the 5 response tokens: (0.1 + 0.3 + 0.2 * 3) / 5 = 0.2; loss = 0.5 + 2.0 * 0.2 = 0.9
    assert loss.item() == torch.tensor(0.9).item()
    assert abs(metrics["actor/domain_loss"].aggregate() - 0.2) < 1e-6
    assert abs(metrics["actor/domain_divergence_token_mean"].aggregate() - 0.2) < 1e-6


def test_sampled_token_estimate_uses_the_next_token_of_each_position():
    nnz = sum(PROMPT) + sum(RESPONSE)
    gen = torch.Generator().manual_seed(1)
    original = torch.randn(1, nnz, VOCAB, generator=gen)
    transformed = torch.randn(1, nnz, VOCAB, generator=gen)
    domain = DomainConfig.from_dict({"shaping": {"estimator": "k1", "divergence": "kl"}})
    loss = DomainLoss(NO_BASE, domain, FakeEngine(transformed), views=_views())
    data = _micro_batch()
    tu.assign_non_tensor(data, **{PASS_KEY: "consistency"})
    out = loss(student_logits=original, data=data)[DIVERGENCE_KEY][0]  # (nnz,)
    # packed input ids: sample 0 = _input_ids(5), sample 1 = _input_ids(5); position i is scored on the token at i + 1
    tokens = torch.cat([_input_ids(5), _input_ids(5)])
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
    domain = DomainConfig.from_dict({"transforms": {"mode": "mixture"}})
    loss = DomainLoss(NO_BASE, domain, engine, views=_views())
    data = _micro_batch(views_per_sample=2)
    tu.assign_non_tensor(data, **{PASS_KEY: "consistency"})
    out = loss(student_logits=original, data=data)[DIVERGENCE_KEY]
    mask = torch.zeros(1, nnz, dtype=torch.bool)
    mask[0, [2, 3, 6, 7, 8]] = True
    expected = full_vocab_divergence(view_a, original, mask, "js") + full_vocab_divergence(view_b, original, mask, "js")
    torch.testing.assert_close(out, (expected / 2).float())
    assert engine.calls == 2


def test_rows_without_an_image_keep_their_inputs_and_add_nothing():
    """verl's synthetic padding rows copy sample 0's fields (its view spec too) but are text-only: no DC, no D_i."""
    nnz = sum(PROMPT) + sum(RESPONSE)
    gen = torch.Generator().manual_seed(3)
    original = torch.randn(1, nnz, VOCAB, generator=gen)
    transformed = torch.randn(1, nnz, VOCAB, generator=gen)
    engine = FakeEngine(transformed)
    loss = DomainLoss(NO_BASE, DomainConfig(), engine, views=_views())
    data = _micro_batch()
    mm = per_sample_values(data["multi_modal_inputs"])
    data["multi_modal_inputs"] = NonTensorStack(mm[0], {})  # sample 1 is a padding row: {} (verl's template)
    tu.assign_non_tensor(data, **{PASS_KEY: "consistency"})
    out = loss(student_logits=original, data=data)[DIVERGENCE_KEY]
    mask = torch.zeros(1, nnz, dtype=torch.bool)
    mask[0, [2, 3]] = True  # only sample 0's response positions
    torch.testing.assert_close(out, full_vocab_divergence(transformed, original, mask, "js").float())
    assert (out[0, 5:] == 0).all()
    assert per_sample_values(engine.seen["multi_modal_inputs"])[1] == {}  # the padding row kept its (empty) inputs


def test_a_row_whose_image_tokens_do_not_match_its_grid_gets_no_view():
    data = _micro_batch()
    ids = list(data["input_ids"].unbind())
    ids[0] = ids[0].clone()
    ids[0][2] = IMAGE_TOKEN  # two image tokens for a grid that holds one
    data["input_ids"] = _nested(ids)
    out, valid = _views().micro_batch(data, 0)
    assert valid == [False, True]
    assert torch.equal(per_sample_values(out["multi_modal_inputs"])[0]["pixel_values"], _pixels(0))


def test_a_view_that_cannot_be_built_names_its_row():
    data = _micro_batch()
    data["extra_info"] = NonTensorStack({"index": 7}, {"index": 8})
    data["data_source"] = NonTensorStack("ucm", "ucm")
    mm = per_sample_values(data["multi_modal_inputs"])
    data["multi_modal_inputs"] = NonTensorStack(mm[0], {**mm[1], "pixel_values": torch.zeros(4, 5)})  # bad width
    with pytest.raises(RuntimeError, match=r"cannot build the 'rot90' view of row ucm/8"):
        _views().micro_batch(data, 0)


def test_answer_scope_keeps_only_the_tokens_inside_the_answer_tags():
    # token texts: 0 "<answer>", 1 "A", 2 "</answer>". Sample 0 answers [0, 1] = "<answer>A" (not well formed: no
    # span, nothing); sample 1 answers [0, 1, 2] = "<answer>A</answer>": only its token 1, predicted at packed
    # position 5 + 2 (prompt) + 1 - 1 = 7, is in scope.
    nnz = sum(PROMPT) + sum(RESPONSE)
    gen = torch.Generator().manual_seed(4)
    original = torch.randn(1, nnz, VOCAB, generator=gen)
    transformed = torch.randn(1, nnz, VOCAB, generator=gen)
    domain = DomainConfig.from_dict({"shaping": {"scope": "answer"}})
    texts = {0: "<answer>", 1: "A", 2: "</answer>"}
    loss = DomainLoss(NO_BASE, domain, FakeEngine(transformed), views=_views(), token_text=texts.__getitem__)
    data = _micro_batch()
    tu.assign_non_tensor(data, **{PASS_KEY: "consistency"})
    out = loss(student_logits=original, data=data)
    mask = torch.zeros(1, nnz, dtype=torch.bool)
    mask[0, 7] = True
    torch.testing.assert_close(out[DIVERGENCE_KEY], full_vocab_divergence(transformed, original, mask, "js").float())
    assert out[SCOPE_FIELD].tolist() == mask.float().tolist()


def test_sequence_level_puts_each_samples_f_of_r_on_its_scope():
    from verl_ext.domain_loss import js_integrand

    nnz = sum(PROMPT) + sum(RESPONSE)
    gen = torch.Generator().manual_seed(5)
    original = torch.randn(1, nnz, VOCAB, generator=gen)
    transformed = torch.randn(1, nnz, VOCAB, generator=gen)
    domain = DomainConfig.from_dict({"shaping": {"level": "sequence"}})
    loss = DomainLoss(NO_BASE, domain, FakeEngine(transformed), views=_views())
    data = _micro_batch()
    tu.assign_non_tensor(data, **{PASS_KEY: "consistency"})
    out = loss(student_logits=original, data=data)[DIVERGENCE_KEY][0]  # (nnz,)
    tokens = torch.cat([_input_ids(5), _input_ids(5)])  # position i is scored on the token at i + 1

    def log_ratio(position: int) -> float:
        label = tokens[position + 1]
        p, q = transformed[0, position].double().log_softmax(-1), original[0, position].double().log_softmax(-1)
        return (p[label] - q[label]).item()

    for positions in ([2, 3], [6, 7, 8]):  # sample 0's and sample 1's response positions
        expected = js_integrand(torch.tensor(sum(log_ratio(i) for i in positions), dtype=torch.float64)).item()
        assert 0 < expected
        for i in positions:
            assert out[i].item() == pytest.approx(expected, rel=1e-5)  # float64 f, stored in fp32
    assert out[[0, 1, 4, 5, 9]].abs().max() == 0


@pytest.mark.parametrize(("target", "orig_grad", "trans_grad"), [("both", True, True), ("original", False, True)])
def test_constraint_target_decides_which_views_logits_get_gradient(target, orig_grad, trans_grad):
    nnz = sum(PROMPT) + sum(RESPONSE)
    gen = torch.Generator().manual_seed(6)
    original = torch.randn(1, nnz, VOCAB, generator=gen).requires_grad_()
    transformed = torch.randn(1, nnz, VOCAB, generator=gen).requires_grad_()
    domain = DomainConfig.from_dict({"constraint": {"target": target}})
    loss = DomainLoss(NO_BASE, domain, FakeEngine(transformed), views=_views())
    data = _micro_batch()
    tu.assign_non_tensor(data, **{PASS_KEY: "constraint"})
    loss(student_logits=original, data=data)[DIVERGENCE_KEY].sum().backward()
    assert (original.grad is not None) is orig_grad and (transformed.grad is not None) is trans_grad


def test_constraint_target_transformed_runs_the_view_without_a_graph():
    nnz = sum(PROMPT) + sum(RESPONSE)
    gen = torch.Generator().manual_seed(7)
    original = torch.randn(1, nnz, VOCAB, generator=gen).requires_grad_()
    transformed = torch.randn(1, nnz, VOCAB, generator=gen).requires_grad_()
    domain = DomainConfig.from_dict({"constraint": {"target": "transformed"}})
    loss = DomainLoss(NO_BASE, domain, FakeEngine(transformed), views=_views())
    data = _micro_batch()
    tu.assign_non_tensor(data, **{PASS_KEY: "constraint"})
    loss(student_logits=original, data=data)[DIVERGENCE_KEY].sum().backward()
    assert original.grad is not None and transformed.grad is None
