"""What every recipe installs in every process, called from each recipe's plugin module (`VERL_USE_EXTERNAL_MODULES`).

    from recipe.common import plugins as common_plugins
    common_plugins.install()

Today: the repairs of verl 0.9.1 bugs the recipes' runs hit (`recipe/common/verl_fixes.py`), installed when verl
imports the module they concern. Idempotent.
"""

from __future__ import annotations

from recipe.common import verl_fixes


def install() -> None:
    """Install the verl repairs (`verl_fixes.install`)."""
    verl_fixes.install()
