#!/usr/bin/env bash
# The two SFT arms of the novel-task study (arXiv 2506.23508) with verl 0.9.1's own SFT trainer, Qwen2.5-VL-7B:
#
#   METHOD=sft TRAIN_FILES=data/jigsaw3/train.parquet bash examples/run_sft_jigsaw.sh
#       answer-only SFT: target <think></think><answer>{ground-truth grid}</answer> (data_prep/sft.py)
#   METHOD=sft_rollouts TRAIN_FILES=data/jigsaw3/train.parquet ROLLOUT_DIR=checkpoints/.../rollouts \
#       bash examples/run_sft_jigsaw.sh
#       SFT on the GRPO run's correct rollouts (max reward, not truncated, deduplicated; recipe/novel_task/rollouts.py)
#
# Both arms use the same images, lr, batch size and steps (TOTAL_STEPS; set it to the GRPO run's number of steps for
# comparable budgets). Every variable can be set from the environment; extra arguments are Hydra overrides of verl's
# sft_trainer_engine.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
METHOD="${METHOD:-sft}"
ARGS=()
for arg in "$@"; do
    if [[ "${arg}" == method=* ]]; then METHOD="${arg#method=}"; else ARGS+=("${arg}"); fi
done

MODEL_PATH="${MODEL_PATH:-Qwen/Qwen2.5-VL-7B-Instruct}"
DATA_DIR="${DATA_DIR:-${REPO_DIR}/data/jigsaw3}"
TRAIN_FILES="${TRAIN_FILES:-${DATA_DIR}/train.parquet}"
SFT_DIR="${SFT_DIR:-$(dirname "${TRAIN_FILES}")/sft}"
SFT_TRAIN_FILES="${SFT_TRAIN_FILES:-${SFT_DIR}/$(basename "${TRAIN_FILES}" .parquet)_${METHOD}.parquet}"
ROLLOUT_DIR="${ROLLOUT_DIR:-}"
MIN_SCORE="${MIN_SCORE:-max}"
MAX_PER_PROMPT="${MAX_PER_PROMPT:-1}"
SEED="${SEED:-0}"
NNODES="${NNODES:-1}"
N_GPUS="${N_GPUS:-8}"
LR="${LR:-1e-5}"
TRAIN_BATCH_SIZE="${TRAIN_BATCH_SIZE:-16}"
MICRO_BATCH_SIZE="${MICRO_BATCH_SIZE:-2}"
MAX_LENGTH="${MAX_LENGTH:-4096}"
TOTAL_EPOCHS="${TOTAL_EPOCHS:-10}"
TOTAL_STEPS="${TOTAL_STEPS:-null}"
PROJECT_NAME="${PROJECT_NAME:-novel_task}"
EXPERIMENT_NAME="${EXPERIMENT_NAME:-qwen25vl7b_jigsaw_${METHOD}}"
CKPT_DIR="${CKPT_DIR:-${REPO_DIR}/checkpoints/${PROJECT_NAME}/${EXPERIMENT_NAME}}"
LOGGER="${LOGGER:-[console,wandb]}"

cd "${REPO_DIR}"
mkdir -p "$(dirname "${SFT_TRAIN_FILES}")"
case "${METHOD}" in
    sft)
        "${PYTHON}" -m data_prep.sft --in "${TRAIN_FILES}" --out "${SFT_TRAIN_FILES}" --think ""
        ;;
    sft_rollouts)
        if [[ -z "${ROLLOUT_DIR}" ]]; then
            echo "run_sft_jigsaw.sh: METHOD=sft_rollouts needs ROLLOUT_DIR (the GRPO run's trainer.rollout_data_dir)" >&2
            exit 2
        fi
        "${PYTHON}" -m recipe.novel_task.rollouts to-sft --dump "${ROLLOUT_DIR}" --train "${TRAIN_FILES}" \
            --out "${SFT_TRAIN_FILES}" --min-score "${MIN_SCORE}" --max-per-prompt "${MAX_PER_PROMPT}"
        ;;
    *)
        echo "run_sft_jigsaw.sh: method=${METHOD} is not an SFT arm of the study; use sft or sft_rollouts" >&2
        exit 2
        ;;
esac

# Training: the SFT baselines' launch script (examples/run_sft_qwen25vl.sh: the recipes' launcher, torchrun), on the
# rows converted above.
export MODEL_PATH SFT_TRAIN_FILES SEED NNODES N_GPUS LR TRAIN_BATCH_SIZE MICRO_BATCH_SIZE MAX_LENGTH TOTAL_EPOCHS
export TOTAL_STEPS PROJECT_NAME EXPERIMENT_NAME CKPT_DIR LOGGER PYTHON
CONVERT=false METHOD="${METHOD}" exec bash "${REPO_DIR}/examples/run_sft_qwen25vl.sh" "${ARGS[@]}"
