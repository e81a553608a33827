#!/usr/bin/env bash
# GRPO on jigsaw puzzles (arXiv 2506.23508) with Qwen2.5-VL-7B-Instruct on one 8-GPU node, through the Domain-Aware
# GRPO recipe's entry point with method=grpo, the jigsaw reward R = R_hit + R_acc + R_fmt (verl_ext/jigsaw.py), and
# the rollout_dump trainer mode, which writes every step's rollouts with row ids and reward components to
# ${ROLLOUT_DIR} (the input of SFT on the correct rollouts: examples/run_sft_jigsaw.sh METHOD=sft_rollouts).
#
#   python -m data_prep jigsaw --source data/ucm/train_8shot.parquet --source data/ucm/test.parquet --out data/jigsaw3
#   TRAIN_FILES=data/jigsaw3/train_8shot.parquet VAL_FILES=data/jigsaw3/test.parquet bash examples/run_qwen25vl_jigsaw.sh
#
# Trainer settings: Visual-RFT's GRPO defaults (group 8, temperature 1, k3 KL 0.04, lr 1e-6) as in
# run_qwen25vl_rs.sh; the response budget is longer (1024): the paper does not give one, and a 3 x 3 puzzle needs
# reasoning over 9 tiles. Every variable can be set from the environment; extra arguments are Hydra overrides, last.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
MODEL_PATH="${MODEL_PATH:-Qwen/Qwen2.5-VL-7B-Instruct}"
DATA_DIR="${DATA_DIR:-${REPO_DIR}/data/jigsaw3}"
TRAIN_FILES="${TRAIN_FILES:-${DATA_DIR}/train.parquet}"
VAL_FILES="${VAL_FILES:-${DATA_DIR}/test.parquet}"
SEED="${SEED:-0}"
NNODES="${NNODES:-1}"
N_GPUS="${N_GPUS:-8}"
ROLLOUT_N="${ROLLOUT_N:-8}"
TEMPERATURE="${TEMPERATURE:-1.0}"
LR="${LR:-1e-6}"
KL_COEF="${KL_COEF:-0.04}"
KL_TYPE="${KL_TYPE:-low_var_kl}"
TRAIN_BATCH_SIZE="${TRAIN_BATCH_SIZE:-16}"
PPO_MINI_BATCH_SIZE="${PPO_MINI_BATCH_SIZE:-16}"
MAX_PROMPT_LENGTH="${MAX_PROMPT_LENGTH:-1024}"
MAX_RESPONSE_LENGTH="${MAX_RESPONSE_LENGTH:-1024}"
MAX_TOKEN_LEN_PER_GPU="${MAX_TOKEN_LEN_PER_GPU:-16384}"
ROLLOUT_TP="${ROLLOUT_TP:-1}"
GPU_MEMORY_UTILIZATION="${GPU_MEMORY_UTILIZATION:-0.5}"
TOTAL_EPOCHS="${TOTAL_EPOCHS:-10}"
TOTAL_STEPS="${TOTAL_STEPS:-null}"  # null: TOTAL_EPOCHS decides; a number matches the SFT runs' steps
SAVE_FREQ="${SAVE_FREQ:-50}"
TEST_FREQ="${TEST_FREQ:-10}"
PROJECT_NAME="${PROJECT_NAME:-novel_task}"
EXPERIMENT_NAME="${EXPERIMENT_NAME:-qwen25vl7b_jigsaw_grpo}"
CKPT_DIR="${CKPT_DIR:-${REPO_DIR}/checkpoints/${PROJECT_NAME}/${EXPERIMENT_NAME}}"
ROLLOUT_DIR="${ROLLOUT_DIR:-${CKPT_DIR}/rollouts}"
LOGGER="${LOGGER:-[console,wandb]}"
REWARD_FN_PATH="${REWARD_FN_PATH:-${REPO_DIR}/verl_ext/jigsaw.py}"

cd "${REPO_DIR}"
"${PYTHON}" -m recipe.domain_grpo.main_domain_grpo \
    method=grpo \
    trainer.v1.trainer_mode=rollout_dump \
    trainer.rollout_data_dir="${ROLLOUT_DIR}" \
    ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=recipe.novel_task.plugins \
    data.train_files="${TRAIN_FILES}" \
    data.val_files="${VAL_FILES}" \
    data.image_key=images \
    data.prompt_key=prompt \
    data.train_batch_size="${TRAIN_BATCH_SIZE}" \
    data.max_prompt_length="${MAX_PROMPT_LENGTH}" \
    data.max_response_length="${MAX_RESPONSE_LENGTH}" \
    data.filter_overlong_prompts=true \
    data.truncation=error \
    data.seed="${SEED}" \
    actor_rollout_ref.model.path="${MODEL_PATH}" \
    actor_rollout_ref.model.use_remove_padding=true \
    actor_rollout_ref.model.enable_gradient_checkpointing=true \
    actor_rollout_ref.actor.strategy=fsdp2 \
    actor_rollout_ref.actor.optim.lr="${LR}" \
    actor_rollout_ref.actor.ppo_mini_batch_size="${PPO_MINI_BATCH_SIZE}" \
    actor_rollout_ref.actor.use_dynamic_bsz=true \
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu="${MAX_TOKEN_LEN_PER_GPU}" \
    actor_rollout_ref.actor.use_kl_loss=true \
    actor_rollout_ref.actor.kl_loss_coef="${KL_COEF}" \
    actor_rollout_ref.actor.kl_loss_type="${KL_TYPE}" \
    actor_rollout_ref.actor.entropy_coeff=0 \
    actor_rollout_ref.ref.strategy=fsdp2 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.mode=async \
    actor_rollout_ref.rollout.n="${ROLLOUT_N}" \
    actor_rollout_ref.rollout.temperature="${TEMPERATURE}" \
    actor_rollout_ref.rollout.tensor_model_parallel_size="${ROLLOUT_TP}" \
    actor_rollout_ref.rollout.gpu_memory_utilization="${GPU_MEMORY_UTILIZATION}" \
    algorithm.use_kl_in_reward=false \
    reward.custom_reward_function.path="${REWARD_FN_PATH}" \
    reward.custom_reward_function.name=compute_score \
    trainer.nnodes="${NNODES}" \
    trainer.n_gpus_per_node="${N_GPUS}" \
    trainer.total_epochs="${TOTAL_EPOCHS}" \
    trainer.total_training_steps="${TOTAL_STEPS}" \
    trainer.save_freq="${SAVE_FREQ}" \
    actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model] \
    trainer.test_freq="${TEST_FREQ}" \
    trainer.project_name="${PROJECT_NAME}" \
    trainer.experiment_name="${EXPERIMENT_NAME}" \
    trainer.default_local_dir="${CKPT_DIR}" \
    trainer.logger="${LOGGER}" \
    "$@"

source "${REPO_DIR}/examples/final_hf.sh"
link_final_hf "${CKPT_DIR}" "actor/huggingface"
