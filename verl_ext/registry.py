"""Registration of the extension in verl's own registries (idempotent, and without importing verl).

`import verl_ext` calls `register()`, which registers `domain_grpo` the moment verl's `core_algos` (the registry's
module) is imported — at once if it already is. So importing verl_ext stays light (torch/PIL only), and the estimator is
in the registry before any verl code can look it up. Ray workers get it through `VERL_USE_EXTERNAL_MODULES=verl_ext`,
which verl imports at `import verl` in every process.
"""

from __future__ import annotations

from types import ModuleType

from verl_ext.import_hooks import when_imported

ADV_ESTIMATOR_NAME = "domain_grpo"
_REGISTRY_MODULE = "verl.trainer.ppo.core_algos"


def _register_estimator(core_algos: ModuleType) -> None:
    from verl_ext.estimator import compute_domain_grpo_outcome_advantage, verl_has_domain_grpo

    if verl_has_domain_grpo(core_algos):  # verl patched with upstream/: its own domain_grpo is registered, use it
        return
    core_algos.register_adv_est(ADV_ESTIMATOR_NAME)(compute_domain_grpo_outcome_advantage)


def register() -> None:
    """Register `domain_grpo` with verl's `register_adv_est` (now, or when verl imports `core_algos`).

    A second call registers the same function again, which verl accepts; a different function under the same name
    raises verl's ValueError. On a verl that carries `domain_grpo` itself (`upstream/` patch) nothing is registered.
    """
    when_imported(_REGISTRY_MODULE, _register_estimator)
