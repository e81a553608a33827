"""domain-rft: Domain-Aware GRPO (arXiv 2601.16419) as a verl 0.9.1 extension.

Importing the package registers the `domain_grpo` advantage estimator in verl's registry (which imports verl, and with
it Ray). The math modules themselves (`divergences`, `transforms`, `config`) depend only on torch/PIL.
Set `VERL_USE_EXTERNAL_MODULES=verl_ext` so that verl imports this package in its Ray workers too.
"""

from verl_ext.registry import ADV_ESTIMATOR_NAME, register

__all__ = ["ADV_ESTIMATOR_NAME", "register"]
__version__ = "0.1.0"

register()
