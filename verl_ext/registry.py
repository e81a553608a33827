"""Registration of the extension in verl's own registries (idempotent).

`import verl_ext` calls `register()`. Ray workers get it through `VERL_USE_EXTERNAL_MODULES=verl_ext`, which verl
imports at `import verl` in every process.
"""

from __future__ import annotations

ADV_ESTIMATOR_NAME = "domain_grpo"


def register() -> None:
    """Register `domain_grpo` with verl's `register_adv_est`; a second call is a no-op, a clash raises ValueError."""
    from verl.trainer.ppo import core_algos

    from verl_ext.estimator import compute_domain_grpo_outcome_advantage

    core_algos.register_adv_est(ADV_ESTIMATOR_NAME)(compute_domain_grpo_outcome_advantage)
