"""Names shared by the recipe's worker, trainer mode, validation pass and agent loop (each defined once, here).

Fields travel through verl's TransferQueue and micro-batches; flags ride on a batch as non-tensor data.
"""

# TransferQueue fields written by the actor's consistency pass (per position, verl's nested token layout)
DIVERGENCE_FIELD = "domain_divergence"  # D(π^D ‖ π) per position, or the sample's sequence-level score on its scope
SCOPE_FIELD = "domain_scope"  # 1.0 where a position predicts an in-scope response token of a sample with a view
TRANSFORM_MASK_FIELD = (
    "domain_transform_mask"  # per sample: bit i set = domain.transforms.names[i] was one of its views
)
CONSISTENCY_FIELD = "domain_consistency"  # per-sample D_i `[batch]`, read by a patched verl's _compute_advantage

# non-tensor flags on a batch / micro-batch
PASS_KEY = "domain_pass"  # "consistency" (old-log-prob pass) or "constraint" (update)
BASE_TOPK_KEY = "domain_base_topk"  # verl's own distillation_use_topk before the worker marked the pass
VAL_DIVERGENCE_FLAG = "domain_val_divergence"  # the trainer's validation pass asks the actor for the divergence

# per-row / per-sample fields of the agent loop
VIEW_KEY = "domain_view"  # extra_fields["domain_view"]: the sample's view specs [{"transform", "seed"}]
VAL_VIEW_FIELD = "domain_val_view"  # validation row field: the agent loop transforms the row's images by this name

TRAINER_MODE = "domain_grpo"
BASE_ESTIMATOR_KEY = "domain_grpo_base_estimator"  # a patched verl's typed AlgoConfig field
