#!/usr/bin/env bash
# verl's own SFT trainer for the PIVOT study on Qwen2.5-VL-3B-Instruct, one 8-GPU node (recipe/pivot/README.md), through
# the recipes' launcher (recipe/common/sft.py: torchrun; NNODES>1 needs NODE_RANK and MASTER_ADDR on every node):
#
#   STAGE=all           SFT baseline on the chosen responses of the DPO pairs (everything trains; the paper: lr 1e-5)
#   STAGE=projector     transplant stage 1: encoder and LLM frozen, the fresh projector trains
#   STAGE=projector_llm transplant stage 2: encoder frozen, projector + LLM train
#
#   PAIRS=data/pairs/pairs.parquet bash examples/run_pivot_sft.sh                          # SFT baseline
#   STAGE=projector MODEL_PATH=runs/pivot_dpo/transplant bash examples/run_pivot_sft.sh
#
# TRAIN_FILES (SFT rows: messages + images) is made from PAIRS if it does not exist (python -m recipe.pivot.sft rows).
# Every variable can be set from the environment; extra arguments are Hydra overrides of verl's sft_trainer_engine.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
STAGE="${STAGE:-all}"
MODEL_PATH="${MODEL_PATH:-Qwen/Qwen2.5-VL-3B-Instruct}"
PAIRS="${PAIRS:-${REPO_DIR}/data/pairs/pairs.parquet}"
TRAIN_FILES="${TRAIN_FILES:-$(dirname "${PAIRS}")/sft.parquet}"
NNODES="${NNODES:-1}"
N_GPUS="${N_GPUS:-8}"
case "${STAGE}" in
    all) DEFAULT_LR=1e-5 ;;
    projector) DEFAULT_LR=1e-4 ;;
    projector_llm) DEFAULT_LR=1e-5 ;;
    *)
        echo "run_pivot_sft.sh: STAGE=${STAGE} is not one of all, projector, projector_llm" >&2
        exit 2
        ;;
esac
LR="${LR:-${DEFAULT_LR}}"
TOTAL_EPOCHS="${TOTAL_EPOCHS:-3}"
TRAIN_BATCH_SIZE="${TRAIN_BATCH_SIZE:-256}"
MICRO_BATCH_SIZE="${MICRO_BATCH_SIZE:-4}"
MAX_LENGTH="${MAX_LENGTH:-2048}"
SEED="${SEED:-0}"
PROJECT_NAME="${PROJECT_NAME:-pivot}"
EXPERIMENT_NAME="${EXPERIMENT_NAME:-qwen25vl3b_sft_${STAGE}}"
CKPT_DIR="${CKPT_DIR:-${REPO_DIR}/checkpoints/${PROJECT_NAME}/${EXPERIMENT_NAME}}"
LOGGER="${LOGGER:-[console,wandb]}"

cd "${REPO_DIR}"
if [[ ! -f "${TRAIN_FILES}" ]]; then
    "${PYTHON}" -m recipe.pivot.sft rows --pairs "${PAIRS}" --out "${TRAIN_FILES}"
fi
"${PYTHON}" -m recipe.pivot.sft train \
    --stage "${STAGE}" \
    --train "${TRAIN_FILES}" \
    --model "${MODEL_PATH}" \
    --out "${CKPT_DIR}" \
    --nnodes "${NNODES}" \
    --nproc "${N_GPUS}" \
    data.train_batch_size="${TRAIN_BATCH_SIZE}" \
    data.micro_batch_size_per_gpu="${MICRO_BATCH_SIZE}" \
    data.max_length="${MAX_LENGTH}" \
    data.truncation=error \
    model.use_remove_padding=true \
    model.enable_gradient_checkpointing=true \
    engine.strategy=fsdp2 \
    optim.lr="${LR}" \
    optim.lr_scheduler_type=cosine \
    optim.lr_warmup_steps_ratio=0.03 \
    checkpoint.save_contents=[model,optimizer,extra,hf_model] \
    trainer.seed="${SEED}" \
    trainer.total_epochs="${TOTAL_EPOCHS}" \
    trainer.project_name="${PROJECT_NAME}" \
    trainer.experiment_name="${EXPERIMENT_NAME}" \
    trainer.logger="${LOGGER}" \
    "$@"
