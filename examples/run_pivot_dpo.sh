#!/usr/bin/env bash
# DPO of the whole Qwen2.5-VL-3B-Instruct (vision encoder included) through verl's RL trainer, one 8-GPU node
# (PIVOT study, arXiv 2510.16333; recipe/pivot/README.md).
#
#   TRAIN_FILES=data/pairs/pairs.parquet VAL_FILES=data/s2/test.parquet bash examples/run_pivot_dpo.sh
#   SOURCE=online ROLLOUT_N=8 TRAIN_FILES=data/s2/train.parquet bash examples/run_pivot_dpo.sh   # own samples
#   FREEZE_VISION=true bash examples/run_pivot_dpo.sh          # control: the encoder frozen (verl's own key, made real)
#
# The paper's DPO settings: beta 0.1, lr 1e-6, 3 epochs, effective batch 256 pairs, cosine schedule, everything
# trainable. TRAIN_FILES: `python -m data_prep preference-pairs` output (offline) or classification rows (online).
# Every variable can be set from the environment; extra arguments are Hydra overrides, applied last.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
MODEL_PATH="${MODEL_PATH:-Qwen/Qwen2.5-VL-3B-Instruct}"
TRAIN_FILES="${TRAIN_FILES:-${REPO_DIR}/data/pairs/pairs.parquet}"
VAL_FILES="${VAL_FILES:-${REPO_DIR}/data/s2_tiles/test.parquet}"
SOURCE="${SOURCE:-offline}"
ROLLOUT_N="${ROLLOUT_N:-2}"
BETA="${BETA:-0.1}"
LR="${LR:-1e-6}"
TOTAL_EPOCHS="${TOTAL_EPOCHS:-3}"
TRAIN_BATCH_SIZE="${TRAIN_BATCH_SIZE:-256}"
FREEZE_VISION="${FREEZE_VISION:-false}"
NNODES="${NNODES:-1}"
N_GPUS="${N_GPUS:-8}"
MAX_PROMPT_LENGTH="${MAX_PROMPT_LENGTH:-1024}"
MAX_RESPONSE_LENGTH="${MAX_RESPONSE_LENGTH:-512}"
# Per-GPU token budget (use_dynamic_bsz): DPO runs no transformed view (domain terms off), so verl's budget is the
# whole load, undivided (the rule of examples/run_qwen25vl_rs.sh does not apply). Start-up refuses a TRAIN_FILES with
# fewer rows than TRAIN_BATCH_SIZE, and prompts / offline pairs over the length limits above dpo.max_overlong_share.
MAX_TOKEN_LEN_PER_GPU="${MAX_TOKEN_LEN_PER_GPU:-12288}"
GPU_MEMORY_UTILIZATION="${GPU_MEMORY_UTILIZATION:-0.5}"
SAVE_FREQ="${SAVE_FREQ:-50}"
TEST_FREQ="${TEST_FREQ:-10}"
SEED="${SEED:-0}"
PROJECT_NAME="${PROJECT_NAME:-pivot}"
EXPERIMENT_NAME="${EXPERIMENT_NAME:-qwen25vl3b_dpo_${SOURCE}}"
CKPT_DIR="${CKPT_DIR:-${REPO_DIR}/checkpoints/${PROJECT_NAME}/${EXPERIMENT_NAME}}"
LOGGER="${LOGGER:-[console,wandb]}"
REWARD_FN_PATH="${REWARD_FN_PATH:-${REPO_DIR}/verl_ext/rewards.py}"

cd "${REPO_DIR}"
"${PYTHON}" -m recipe.pivot.main_pivot_dpo \
    data.train_files="${TRAIN_FILES}" \
    data.val_files="${VAL_FILES}" \
    data.train_batch_size="${TRAIN_BATCH_SIZE}" \
    data.max_prompt_length="${MAX_PROMPT_LENGTH}" \
    data.max_response_length="${MAX_RESPONSE_LENGTH}" \
    data.filter_overlong_prompts=true \
    data.truncation=error \
    data.seed="${SEED}" \
    dpo.beta="${BETA}" \
    dpo.pairs.source="${SOURCE}" \
    actor_rollout_ref.model.path="${MODEL_PATH}" \
    actor_rollout_ref.model.use_remove_padding=true \
    actor_rollout_ref.model.enable_gradient_checkpointing=true \
    actor_rollout_ref.actor.strategy=fsdp2 \
    actor_rollout_ref.actor.freeze_vision_tower="${FREEZE_VISION}" \
    actor_rollout_ref.actor.optim.lr="${LR}" \
    actor_rollout_ref.actor.optim.lr_scheduler_type=cosine \
    actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.03 \
    actor_rollout_ref.actor.use_dynamic_bsz=true \
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu="${MAX_TOKEN_LEN_PER_GPU}" \
    actor_rollout_ref.ref.strategy=fsdp2 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.mode=async \
    actor_rollout_ref.rollout.n="${ROLLOUT_N}" \
    actor_rollout_ref.rollout.gpu_memory_utilization="${GPU_MEMORY_UTILIZATION}" \
    actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model] \
    reward.custom_reward_function.path="${REWARD_FN_PATH}" \
    reward.custom_reward_function.name=compute_score \
    trainer.nnodes="${NNODES}" \
    trainer.n_gpus_per_node="${N_GPUS}" \
    trainer.total_epochs="${TOTAL_EPOCHS}" \
    trainer.save_freq="${SAVE_FREQ}" \
    trainer.test_freq="${TEST_FREQ}" \
    trainer.project_name="${PROJECT_NAME}" \
    trainer.experiment_name="${EXPERIMENT_NAME}" \
    trainer.default_local_dir="${CKPT_DIR}" \
    trainer.logger="${LOGGER}" \
    "$@"

# The last checkpoint's Hugging Face weights as ${CKPT_DIR}/final_hf.
source "${REPO_DIR}/examples/final_hf.sh"
link_final_hf "${CKPT_DIR}" "actor/huggingface"
