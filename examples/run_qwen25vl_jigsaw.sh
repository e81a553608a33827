#!/usr/bin/env bash
# GRPO on jigsaw puzzles (arXiv 2506.23508) with Qwen2.5-VL-7B-Instruct on one 8-GPU node: the remote-sensing launch
# script (examples/run_qwen25vl_rs.sh, same trainer settings) with method=grpo, the jigsaw reward
# R = R_hit + R_acc + R_fmt (verl_ext/jigsaw.py), and the rollout_dump trainer mode, which writes every step's rollouts
# with row ids and reward components to ${ROLLOUT_DIR} (the input of SFT on the correct rollouts:
# examples/run_sft_jigsaw.sh METHOD=sft_rollouts).
#
#   python -m data_prep jigsaw --source data/ucm/train_8shot.parquet --source data/ucm/test.parquet --out data/jigsaw3
#   TRAIN_FILES=data/jigsaw3/train_8shot.parquet VAL_FILES=data/jigsaw3/test.parquet bash examples/run_qwen25vl_jigsaw.sh
#
# Differences from run_qwen25vl_rs.sh: a 7B model, a longer response budget (1024: the paper gives none, and a 3 x 3
# puzzle needs reasoning over 9 tiles), TOTAL_STEPS to match the SFT arms' steps. Plain GRPO has no transformed view
# (jigsaw rows allow no transform), so the per-GPU token budget is verl's, undivided: 16384 for the longer responses. Every variable of either script can
# be set from the environment; extra arguments are Hydra overrides, last.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export MODEL_PATH="${MODEL_PATH:-Qwen/Qwen2.5-VL-7B-Instruct}"
export DATA_DIR="${DATA_DIR:-${REPO_DIR}/data/jigsaw3}"
export TRAIN_FILES="${TRAIN_FILES:-${DATA_DIR}/train.parquet}"
export VAL_FILES="${VAL_FILES:-${DATA_DIR}/test.parquet}"
export MAX_RESPONSE_LENGTH="${MAX_RESPONSE_LENGTH:-1024}"
export MAX_TOKEN_LEN_PER_GPU="${MAX_TOKEN_LEN_PER_GPU:-16384}"
export TOTAL_EPOCHS="${TOTAL_EPOCHS:-10}"
export TEST_FREQ="${TEST_FREQ:-10}"
export PROJECT_NAME="${PROJECT_NAME:-novel_task}"
export EXPERIMENT_NAME="${EXPERIMENT_NAME:-qwen25vl7b_jigsaw_grpo}"
export CKPT_DIR="${CKPT_DIR:-${REPO_DIR}/checkpoints/${PROJECT_NAME}/${EXPERIMENT_NAME}}"
export REWARD_FN_PATH="${REWARD_FN_PATH:-${REPO_DIR}/verl_ext/jigsaw.py}"
TOTAL_STEPS="${TOTAL_STEPS:-null}"  # null: TOTAL_EPOCHS decides; a number matches the SFT runs' steps
ROLLOUT_DIR="${ROLLOUT_DIR:-${CKPT_DIR}/rollouts}"

exec bash "${REPO_DIR}/examples/run_qwen25vl_rs.sh" \
    method=grpo \
    trainer.v1.trainer_mode=rollout_dump \
    trainer.rollout_data_dir="${ROLLOUT_DIR}" \
    ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=recipe.novel_task.plugins \
    trainer.total_training_steps="${TOTAL_STEPS}" \
    "$@"
