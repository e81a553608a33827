#!/usr/bin/env bash
# SFT baselines on the same k-shot data (paper Tables 2/3 "SFT", Table 7 "SFT+DA") with verl 0.9.1's own SFT trainer
# (torchrun, through recipe/common/sft.py).
#
#   TRAIN_FILES=data/ucm/train_8shot.parquet bash examples/run_sft_qwen25vl.sh                 # method=sft
#   TRAIN_FILES=data/ucm/train_8shot.parquet bash examples/run_sft_qwen25vl.sh method=sft_da   # + transformed copies
#
# TRAIN_FILES is the RL parquet written by data_prep; it is converted first (data_prep/sft.py) into
# verl's multi-turn SFT layout (`messages` = prompt + `<think>…</think><answer>{label}</answer>`, `images`), which
# verl's MultiTurnSFTDataset reads with the model's processor. sft_da adds COPIES transformed copies per row, drawn
# from the row's whitelist ∩ DA_TRANSFORMS (default: all of them; the row whitelist keeps it label-preserving).
# Every variable can be set from the environment; extra arguments are Hydra overrides of verl's sft_trainer_engine.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
METHOD="${METHOD:-sft}"
ARGS=()
for arg in "$@"; do
    if [[ "${arg}" == method=* ]]; then METHOD="${arg#method=}"; else ARGS+=("${arg}"); fi
done
# CONVERT=false: SFT_TRAIN_FILES is already in verl's SFT layout (e.g. examples/run_sft_jigsaw.sh writes it).
CONVERT="${CONVERT:-true}"
AUGMENT_FLAGS=()
if [[ "${CONVERT}" == "true" ]]; then
    case "${METHOD}" in
        sft) ;;
        sft_da) AUGMENT_FLAGS=(--augment) ;;
        *)
            echo "run_sft_qwen25vl.sh: method=${METHOD} is not an SFT baseline; use sft or sft_da" >&2
            exit 2
            ;;
    esac
fi

MODEL_PATH="${MODEL_PATH:-Qwen/Qwen2.5-VL-3B-Instruct}"
DATA_DIR="${DATA_DIR:-${REPO_DIR}/data/ucm}"
TRAIN_FILES="${TRAIN_FILES:-${DATA_DIR}/train_8shot.parquet}"
SFT_DIR="${SFT_DIR:-$(dirname "${TRAIN_FILES}")/sft}"
SFT_TRAIN_FILES="${SFT_TRAIN_FILES:-${SFT_DIR}/$(basename "${TRAIN_FILES}" .parquet)_${METHOD}.parquet}"
COPIES="${COPIES:-3}"
DA_TRANSFORMS="${DA_TRANSFORMS:-rot90,rot180,rot270,hflip,vflip}"
SEED="${SEED:-0}"
NNODES="${NNODES:-1}"
N_GPUS="${N_GPUS:-8}"
LR="${LR:-1e-5}"
TRAIN_BATCH_SIZE="${TRAIN_BATCH_SIZE:-16}"
MICRO_BATCH_SIZE="${MICRO_BATCH_SIZE:-2}"
MAX_LENGTH="${MAX_LENGTH:-2048}"
TOTAL_EPOCHS="${TOTAL_EPOCHS:-5}"
TOTAL_STEPS="${TOTAL_STEPS:-null}"  # null: TOTAL_EPOCHS decides
PROJECT_NAME="${PROJECT_NAME:-domain_rft}"
EXPERIMENT_NAME="${EXPERIMENT_NAME:-qwen25vl3b_${METHOD}}"
CKPT_DIR="${CKPT_DIR:-${REPO_DIR}/checkpoints/${PROJECT_NAME}/${EXPERIMENT_NAME}}"
LOGGER="${LOGGER:-[console,wandb]}"

cd "${REPO_DIR}"
if [[ "${CONVERT}" == "true" ]]; then
    mkdir -p "$(dirname "${SFT_TRAIN_FILES}")"
    "${PYTHON}" -m data_prep.sft --in "${TRAIN_FILES}" --out "${SFT_TRAIN_FILES}" \
        --copies "${COPIES}" --transforms "${DA_TRANSFORMS}" --seed "${SEED}" "${AUGMENT_FLAGS[@]}"
fi

# verl's SFT trainer through the recipes' launcher (recipe/common/sft.py): torchrun + verl.trainer.sft_trainer; it links
# ${CKPT_DIR}/final_hf to the last checkpoint's Hugging Face weights. Several nodes: NNODES>1 with NODE_RANK and
# MASTER_ADDR (MASTER_PORT, default 29500) set on every node.
"${PYTHON}" -m recipe.common.sft \
    --train-files "${SFT_TRAIN_FILES}" \
    --model "${MODEL_PATH}" \
    --out "${CKPT_DIR}" \
    --nnodes "${NNODES}" \
    --nproc-per-node "${N_GPUS}" \
    data.train_batch_size="${TRAIN_BATCH_SIZE}" \
    data.micro_batch_size_per_gpu="${MICRO_BATCH_SIZE}" \
    data.max_length="${MAX_LENGTH}" \
    data.truncation=error \
    model.use_remove_padding=true \
    model.enable_gradient_checkpointing=true \
    optim.lr="${LR}" \
    checkpoint.save_contents=[model,optimizer,extra,hf_model] \
    trainer.seed="${SEED}" \
    trainer.total_epochs="${TOTAL_EPOCHS}" \
    trainer.total_training_steps="${TOTAL_STEPS}" \
    trainer.project_name="${PROJECT_NAME}" \
    trainer.experiment_name="${EXPERIMENT_NAME}" \
    trainer.logger="${LOGGER}" \
    "${ARGS[@]}"
