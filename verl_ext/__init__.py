"""domain-rft: Domain-Aware GRPO (arXiv 2601.16419) as a verl 0.9.1 extension.

Importing the package registers the `domain_grpo` advantage estimator in verl's registry — when verl imports its
`core_algos` module, or at once if it already has — so `import verl_ext` itself imports only torch and PIL.
Set `VERL_USE_EXTERNAL_MODULES=verl_ext` so that verl imports this package in its Ray workers too.
"""

from verl_ext.registry import ADV_ESTIMATOR_NAME, register

__all__ = ["ADV_ESTIMATOR_NAME", "register"]
__version__ = "0.1.0"

register()
