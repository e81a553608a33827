#!/usr/bin/env bash
# Domain-Aware GRPO (or a baseline) on Qwen2.5-VL-3B-Instruct, MedMNIST classification, one 8-GPU node.
#
#   DATASET=organamnist bash examples/run_qwen25vl_med.sh                 # the paper's method, T = vflip
#   DATASET=bloodmnist METHOD=grpo bash examples/run_qwen25vl_med.sh      # a baseline
#
# Same settings as examples/run_qwen25vl_rs.sh (Visual-RFT's defaults; every variable there can be set here too, and
# extra arguments are Hydra overrides); this script only picks the MedMNIST data and the transforms. The per-GPU token
# budget follows run_qwen25vl_rs.sh's rule: BASE_TOKEN_LEN_PER_GPU / (1 + VIEWS) for a method with the view; with
# TRANSFORMS=[hflip,vflip,rot180] and domain.transforms.mode=mixture, set VIEWS=3.
# TRANSFORMS must be a subset of the dataset's label-preserving whitelist (data_prep/README.md; checked at start-up).
# Default per flag (the paper: one op from the whitelist, flips and 180°):
#   organamnist, organcmnist, organsmnist                    [vflip]   (left/right organ classes: no hflip, no rotation)
#   chestmnist, pneumoniamnist, octmnist, breastmnist       [hflip]   (up/down is anatomy or depth)
#   pathmnist, bloodmnist, tissuemnist, dermamnist, retinamnist   [hflip,vflip,rot180]
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATASET="${DATASET:-organamnist}"
case "${DATASET}" in
    organamnist | organcmnist | organsmnist) DEFAULT_TRANSFORMS="[vflip]" ;;
    chestmnist | pneumoniamnist | octmnist | breastmnist) DEFAULT_TRANSFORMS="[hflip]" ;;
    pathmnist | bloodmnist | tissuemnist | dermamnist | retinamnist) DEFAULT_TRANSFORMS="[hflip,vflip,rot180]" ;;
    *)
        echo "run_qwen25vl_med.sh: DATASET=${DATASET} is not a MedMNIST flag this script knows; set DATASET to one of" \
            "the flags in data_prep/README.md, or set TRANSFORMS yourself" >&2
        [[ -n "${TRANSFORMS:-}" ]] || exit 2
        DEFAULT_TRANSFORMS="${TRANSFORMS}"
        ;;
esac
export TRANSFORMS="${TRANSFORMS:-${DEFAULT_TRANSFORMS}}"
export DATA_DIR="${DATA_DIR:-${REPO_DIR}/data/${DATASET}}"
METHOD_NAME="${METHOD:-dc_dr}"
for arg in "$@"; do
    if [[ "${arg}" == method=* ]]; then METHOD_NAME="${arg#method=}"; fi
done
export EXPERIMENT_NAME="${EXPERIMENT_NAME:-qwen25vl3b_${DATASET}_${METHOD_NAME}}"

exec bash "${REPO_DIR}/examples/run_qwen25vl_rs.sh" "$@"
