"""verl 0.9.1's own SFT trainer (`verl.trainer.sft_trainer`, torchrun) on CPU: the command and its settings.

Tests, the demo and the studies' CPU runs launch verl's SFT trainer exactly as a GPU user does (torchrun +
`verl.trainer.sft_trainer` + Hydra overrides), with the CPU stand-ins selected through the environment
(`VERL_PLATFORM=cpu`, `VERL_USE_EXTERNAL_MODULES=verl_ext.cpu`: the cpu platform, verl's FSDP engines under the cpu
key, and the gloo process group for torchrun, `platform.patch_process_group_backend`) and the overrides below.
Nothing here is used on the GPU path.

    argv, env = sft_command(train_files, model_path, out_dir, steps=2)
    subprocess.run(argv, env=env, check=True)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

# The settings that differ from verl's sft_trainer_engine defaults on a CPU (see stand_in/cpu_tiny.yaml for the RL
# loop's): no flash-attn (no remove-padding; sdpa attention), FSDP2 over gloo, fp32, fixed micro-batches.
CPU_SFT_OVERRIDES: tuple[str, ...] = (
    "trainer.device=cpu",
    "trainer.nnodes=1",
    "trainer.n_gpus_per_node=1",
    "model.use_remove_padding=false",
    "+model.override_config.attn_implementation=sdpa",
    "model.enable_gradient_checkpointing=false",
    "engine=fsdp",
    "engine.strategy=fsdp2",
    # fp32 compute (verl's default autocasts to bf16): matches the RL stand-in and is faster on CPU.
    "+engine.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
    "engine.use_torch_compile=false",
    "data.val_files=null",
    "data.messages_key=messages",
    # verl's default of 8 dataloader workers swamps a 2-core machine.
    "data.num_workers=0",
    "trainer.logger=[console,file]",
    "trainer.resume_mode=disable",
    "checkpoint.save_contents=[model,hf_model]",
)
CPU_SFT_ENV = {
    "VERL_PLATFORM": "cpu",
    "VERL_USE_EXTERNAL_MODULES": "verl_ext.cpu",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
}


def sft_command(
    train_files: str | os.PathLike,
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    steps: int,
    overrides: Sequence[str] = (),
    batch_size: int = 4,
    micro_batch_size: int = 2,
    max_length: int = 1024,
    lr: float = 1e-3,
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of one CPU run of verl's SFT trainer (1 rank, torchrun `--standalone`).

    Args:
        train_files: SFT parquet (verl's multi-turn layout: `messages` + `images`).
        model_path: HF model folder (e.g. `tiny_qwen25vl.build_tiny_model_dir`).
        out_dir: `trainer.default_local_dir`; the last step's HF weights land in `global_step_<steps>/huggingface`.
        steps: `trainer.total_training_steps` (the last step is always checkpointed by verl).
        overrides: further Hydra overrides of verl's `sft_trainer_engine`, applied last.

    Creates `out_dir` (verl's file logger needs it before the trainer makes it).

    Returns:
        (argv, env): the environment is `os.environ` plus `CPU_SFT_ENV` and `VERL_FILE_LOGGER_PATH`
        (`<out_dir>/metrics.jsonl`, verl's file logger).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)  # verl's file logger opens its file before the trainer makes the folder
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=1",
        "-m",
        "verl.trainer.sft_trainer",
        *CPU_SFT_OVERRIDES,
        f"data.train_files={train_files}",
        f"data.train_batch_size={batch_size}",
        f"data.micro_batch_size_per_gpu={micro_batch_size}",
        f"data.max_length={max_length}",
        f"model.path={model_path}",
        f"optim.lr={lr}",
        f"trainer.total_training_steps={steps}",
        f"trainer.default_local_dir={out}",
        *overrides,
    ]
    env = dict(os.environ, **CPU_SFT_ENV, VERL_FILE_LOGGER_PATH=str(out / "metrics.jsonl"), PYTHONUNBUFFERED="1")
    return argv, env


def final_hf_dir(out_dir: str | os.PathLike, steps: int) -> Path:
    """The HF weights verl's SFT trainer writes for the last step."""
    return Path(out_dir) / f"global_step_{steps}" / "huggingface"
