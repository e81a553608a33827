"""The CPU stand-in of verl 0.9.1's own SFT trainer (`verl.trainer.sft_trainer`, torchrun): its settings.

Tests, the demo and the studies' CPU runs launch verl's SFT trainer exactly as a GPU user does, through the recipes'
one launcher (`recipe/common/sft.py`, `--cpu`): one torchrun rank, the environment below (`VERL_PLATFORM=cpu`,
`VERL_USE_EXTERNAL_MODULES=verl_ext.cpu`: the cpu platform, verl's FSDP engines under the cpu key, the gloo process
group for torchrun, `platform.patch_process_group_backend`) and the overrides below, applied after the caller's.
Nothing here is used on the GPU path.
"""

from __future__ import annotations

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
