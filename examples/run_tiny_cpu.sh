#!/usr/bin/env bash
# Domain-Aware GRPO with verl 0.9.1's own trainer loop on CPU, tiny random Qwen2.5-VL, tiny image task (demo / smoke test).
#
#   bash examples/run_tiny_cpu.sh                       # 2 steps, files under ${WORK_DIR}
#   STEPS=5 N=8 bash examples/run_tiny_cpu.sh trainer.save_freq=5   # extra args are Hydra overrides
#
# Every setting below can be overridden from the environment. The tiny model and the tiny task are built if missing.
# The CPU stand-ins (verl_ext.cpu: `cpu` platform + `hf` rollout) come from `stand_in=cpu_tiny`
# (recipe/domain_grpo/config/stand_in/cpu_tiny.yaml).
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-${REPO_DIR}/.venv/bin/python}"
WORK_DIR="${WORK_DIR:-${REPO_DIR}/demo_out/tiny_cpu}"
MODEL_DIR="${MODEL_DIR:-${WORK_DIR}/tiny-qwen25vl}"
DATA_DIR="${DATA_DIR:-${WORK_DIR}/data}"
TRAIN_FILES="${TRAIN_FILES:-${DATA_DIR}/train.parquet}"
VAL_FILES="${VAL_FILES:-${DATA_DIR}/val.parquet}"
REWARD_FN_PATH="${REWARD_FN_PATH:-${REPO_DIR}/verl_ext/cpu/tiny_task.py}"
# compute_dense_score: a random-weight model scores 0 under the exact-match compute_score (no gradient at all).
REWARD_FN_NAME="${REWARD_FN_NAME:-compute_dense_score}"
ADV_ESTIMATOR="${ADV_ESTIMATOR:-domain_grpo}"
N="${N:-4}"
STEPS="${STEPS:-2}"
BATCH_SIZE="${BATCH_SIZE:-2}"
RESPONSE_LENGTH="${RESPONSE_LENGTH:-24}"
LR="${LR:-1e-3}"
EXPERIMENT_NAME="${EXPERIMENT_NAME:-tiny_cpu}"
CKPT_DIR="${CKPT_DIR:-${WORK_DIR}/checkpoints}"
export VERL_FILE_LOGGER_PATH="${VERL_FILE_LOGGER_PATH:-${WORK_DIR}/metrics.jsonl}"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

mkdir -p "${WORK_DIR}"
cd "${REPO_DIR}"

if [[ ! -f "${MODEL_DIR}/model.safetensors" ]]; then
    "${PYTHON}" -m verl_ext.cpu.tiny_qwen25vl --out "${MODEL_DIR}"
fi
if [[ ! -f "${TRAIN_FILES}" || ! -f "${VAL_FILES}" ]]; then
    "${PYTHON}" -m verl_ext.cpu.tiny_task --out "${DATA_DIR}"
fi

"${PYTHON}" -m recipe.domain_grpo.main_domain_grpo \
    stand_in=cpu_tiny \
    algorithm.adv_estimator="${ADV_ESTIMATOR}" \
    actor_rollout_ref.model.path="${MODEL_DIR}" \
    data.train_files="${TRAIN_FILES}" \
    data.val_files="${VAL_FILES}" \
    data.train_batch_size="${BATCH_SIZE}" \
    data.max_response_length="${RESPONSE_LENGTH}" \
    actor_rollout_ref.actor.ppo_mini_batch_size="${BATCH_SIZE}" \
    actor_rollout_ref.actor.optim.lr="${LR}" \
    actor_rollout_ref.rollout.n="${N}" \
    reward.custom_reward_function.path="${REWARD_FN_PATH}" \
    reward.custom_reward_function.name="${REWARD_FN_NAME}" \
    trainer.total_training_steps="${STEPS}" \
    trainer.experiment_name="${EXPERIMENT_NAME}" \
    trainer.default_local_dir="${CKPT_DIR}" \
    hydra.run.dir="${WORK_DIR}/hydra" \
    "$@"
