"""End to end: verl 0.9.1's own GRPO loop (v1 trainer, engine workers, agent loop, TransferQueue, reward loop) on CPU.

Runs ``recipe.domain_grpo.main_domain_grpo stand_in=cpu_tiny`` for two steps in a subprocess with the tiny random
Qwen2.5-VL and a six-row image parquet, then checks verl's file-logger metrics and the step-2 HF checkpoint.
About 2 minutes and ~8 GB RAM on 2 cores.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir

STEPS = 2


@pytest.mark.slow
def test_two_grpo_steps_train_the_actor(tmp_path: Path, run_tiny_training) -> None:
    # Plain GRPO through verl's own trainer mode, worker and agent loop: only the CPU stand-ins are ours.
    result, metrics = run_tiny_training(
        tmp_path,
        STEPS,
        [
            "algorithm.adv_estimator=grpo",
            "domain.constraint.enable=false",
            "domain.shaping.enable=false",
            "trainer.v1.trainer_mode=sync",
            "domain_recipe.actor_rollout_ref_worker=null",
            "actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent",
            f"trainer.save_freq={STEPS}",
            "actor_rollout_ref.actor.checkpoint.save_contents=[model,hf_model]",
            # no weight decay: any weight that changed was moved by a gradient
            "actor_rollout_ref.actor.optim.weight_decay=0.0",
        ],
    )
    assert result.returncode == 0, result.stdout[-6000:]

    assert sorted(metrics) == list(range(1, STEPS + 1))
    for step, values in metrics.items():
        for key in ("actor/pg_loss", "actor/grad_norm", "actor/entropy", "critic/score/mean", "critic/advantages/max"):
            assert key in values, f"step {step} lacks {key}"
            assert math.isfinite(values[key]), f"step {step}: {key}={values[key]}"
        # the dense reward differs between samples, so GRPO's advantages and the gradient are not zero
        assert values["critic/advantages/max"] > 0
        assert values["actor/grad_norm"] > 0
        # the rollout (transformers generate, weights synced from FSDP) samples from the actor's distribution
        assert values["training/rollout_actor_probs_pearson_corr"] > 0.99

    initial = load_file(Path(build_tiny_model_dir(tmp_path / "model")) / "model.safetensors")
    trained = load_file(tmp_path / "ckpt" / f"global_step_{STEPS}" / "actor" / "huggingface" / "model.safetensors")
    assert set(trained) >= set(initial) - {"lm_head.weight"}
    assert all(torch.isfinite(tensor).all() for tensor in trained.values())
    changed = [name for name in initial if name in trained and not torch.equal(initial[name], trained[name])]
    assert len(changed) > len(initial) // 2, f"only {len(changed)} of {len(initial)} tensors changed"
