# Sourced by the launch scripts: expose the last checkpoint's Hugging Face weights as <ckpt_dir>/final_hf, which the
# evaluation CLI and the experiment matrix read. verl records the last step N in latest_checkpointed_iteration.txt.
#   link_final_hf CKPT_DIR SUBDIR     SUBDIR inside global_step_<N>: actor/huggingface (RL) or huggingface (SFT)
link_final_hf() {
    local ckpt_dir="$1" subdir="$2" last_step
    if [[ -f "${ckpt_dir}/latest_checkpointed_iteration.txt" ]]; then
        last_step="$(cat "${ckpt_dir}/latest_checkpointed_iteration.txt")"
        ln -sfn "global_step_${last_step}/${subdir}" "${ckpt_dir}/final_hf"
    fi
}
