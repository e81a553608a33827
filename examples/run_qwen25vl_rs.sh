#!/usr/bin/env bash
# Domain-Aware GRPO (or a baseline) on Qwen2.5-VL-3B-Instruct, remote-sensing scene classification, one 8-GPU node.
#
#   bash examples/run_qwen25vl_rs.sh                                  # the paper's method (method=dc_dr)
#   METHOD=grpo bash examples/run_qwen25vl_rs.sh                      # a baseline (see recipe/domain_grpo/README.md)
#   bash examples/run_qwen25vl_rs.sh method=dc trainer.total_epochs=30   # `method=` may also be an argument
#
# Visual-RFT's trainer defaults (shared/reference/method.md): group size 8, temperature 1.0, k3 (low_var_kl) KL to the
# reference with beta 0.04, lr 1e-6, max response 256 tokens. Layout like verl's
# examples/grpo_trainer/run_qwen2_5_vl_7b_fsdp.sh (fsdp2, remove padding, dynamic batch size, vLLM).
# Every variable below can be set from the environment; extra arguments are Hydra overrides, applied last.
# Not set here: Visual-RFT's max_pixels 401408 — every image of the paper's datasets is at most 600x600 = 360,000 px,
# so it never binds (verl 0.9.1 resizes with qwen_vl_utils' defaults; a processor kwarg does not change that).
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
METHOD="${METHOD:-dc_dr}"
# A `method=<name>` argument wins over METHOD (it picks the reward function below too).
ARGS=()
for arg in "$@"; do
    if [[ "${arg}" == method=* ]]; then METHOD="${arg#method=}"; else ARGS+=("${arg}"); fi
done

MODEL_PATH="${MODEL_PATH:-Qwen/Qwen2.5-VL-3B-Instruct}"
DATA_DIR="${DATA_DIR:-${REPO_DIR}/data/ucm}"
TRAIN_FILES="${TRAIN_FILES:-${DATA_DIR}/train_8shot.parquet}"
VAL_FILES="${VAL_FILES:-${DATA_DIR}/val.parquet}"
# Remote sensing: one non-identity rotation per sample and step (Hydra list syntax).
TRANSFORMS="${TRANSFORMS:-[rot90,rot180,rot270]}"
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
MAX_RESPONSE_LENGTH="${MAX_RESPONSE_LENGTH:-256}"
# Token budget per GPU under use_dynamic_bsz. verl's ppo_max_token_len_per_gpu (and the log-prob pass's budget, which
# follows it) counts the original view only, but the methods with a transformed view (DC and/or DR: every method but
# grpo, grpo_da, oc) run each sample's V views in the same micro-batch, so a micro-batch holds budget x (1 + V)
# tokens. Rule: MAX_TOKEN_LEN_PER_GPU = BASE_TOKEN_LEN_PER_GPU / (1 + V), BASE being what one GPU fits without the
# view (12288, verl's Qwen2.5-VL example) and V = VIEWS (1; with domain.transforms.mode=mixture, the number of
# non-identity transforms). Start-up prints the effective load (recipe/domain_grpo/startup.py:view_token_budget).
BASE_TOKEN_LEN_PER_GPU="${BASE_TOKEN_LEN_PER_GPU:-12288}"
case "${METHOD}" in
    grpo | grpo_da | oc) VIEWS=0 ;;
    *) VIEWS="${VIEWS:-1}" ;;
esac
MAX_TOKEN_LEN_PER_GPU="${MAX_TOKEN_LEN_PER_GPU:-$((BASE_TOKEN_LEN_PER_GPU / (1 + VIEWS)))}"
ROLLOUT_TP="${ROLLOUT_TP:-1}"
GPU_MEMORY_UTILIZATION="${GPU_MEMORY_UTILIZATION:-0.5}"
TOTAL_EPOCHS="${TOTAL_EPOCHS:-20}"
SAVE_FREQ="${SAVE_FREQ:-50}"  # >0: also saved at the last step (final_hf below needs one)
TEST_FREQ="${TEST_FREQ:-5}"
PROJECT_NAME="${PROJECT_NAME:-domain_rft}"
EXPERIMENT_NAME="${EXPERIMENT_NAME:-qwen25vl3b_rs_${METHOD}}"
CKPT_DIR="${CKPT_DIR:-${REPO_DIR}/checkpoints/${PROJECT_NAME}/${EXPERIMENT_NAME}}"
LOGGER="${LOGGER:-[console,wandb]}"
if [[ "${METHOD}" == "oc" ]]; then DEFAULT_REWARD="recipe/domain_grpo/oc_reward.py"; else DEFAULT_REWARD="verl_ext/rewards.py"; fi
REWARD_FN_PATH="${REWARD_FN_PATH:-${REPO_DIR}/${DEFAULT_REWARD}}"

cd "${REPO_DIR}"
"${PYTHON}" -m recipe.domain_grpo.main_domain_grpo \
    method="${METHOD}" \
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
    domain.transforms.names="${TRANSFORMS}" \
    domain.transforms.seed="${SEED}" \
    reward.custom_reward_function.path="${REWARD_FN_PATH}" \
    reward.custom_reward_function.name=compute_score \
    trainer.nnodes="${NNODES}" \
    trainer.n_gpus_per_node="${N_GPUS}" \
    trainer.total_epochs="${TOTAL_EPOCHS}" \
    trainer.save_freq="${SAVE_FREQ}" \
    actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model] \
    trainer.test_freq="${TEST_FREQ}" \
    trainer.project_name="${PROJECT_NAME}" \
    trainer.experiment_name="${EXPERIMENT_NAME}" \
    trainer.default_local_dir="${CKPT_DIR}" \
    trainer.logger="${LOGGER}" \
    "${ARGS[@]}"

# The last checkpoint's Hugging Face weights as ${CKPT_DIR}/final_hf (verl writes global_step_<N>/actor/huggingface).
source "${REPO_DIR}/examples/final_hf.sh"
link_final_hf "${CKPT_DIR}" "actor/huggingface"
