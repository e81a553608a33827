#!/usr/bin/env bash
# The whole PIVOT study on one 8-GPU node: DPO and SFT from the same pairs -> encoder probes -> transplant of the base,
# SFT and DPO encoders under identical projector + LLM training -> evaluation -> report (recipe/pivot/README.md).
#
#   BASE=/models/Qwen2.5-VL-3B-Instruct TRAIN=data/s2_tiles/train.parquet TEST=data/s2_tiles/test.parquet \
#       bash examples/run_pivot_study.sh [--set pairs=data/mmpr_pairs/pairs.parquet] [--dry-run]
#
# Resumable: rerun after a failure and finished stages are skipped. Stage commands: recipe/pivot/study/qwen25vl_3b.yaml.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
SPEC="${SPEC:-${REPO_DIR}/recipe/pivot/study/qwen25vl_3b.yaml}"
BASE="${BASE:-Qwen/Qwen2.5-VL-3B-Instruct}"
TRAIN="${TRAIN:-${REPO_DIR}/data/s2_tiles/train.parquet}"
TEST="${TEST:-${REPO_DIR}/data/s2_tiles/test.parquet}"
OUT="${OUT:-${REPO_DIR}/outputs/pivot_study}"

cd "${REPO_DIR}"
"${PYTHON}" -m recipe.pivot.study --spec "${SPEC}" \
    --set base="${BASE}" --set train="${TRAIN}" --set test="${TEST}" --set out="${OUT}" "$@"
