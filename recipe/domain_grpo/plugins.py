"""Everything the recipe registers with verl, in one importable module (for `VERL_USE_EXTERNAL_MODULES`).

verl imports the modules named there at `import verl` in every Ray process: this one registers the `domain_grpo`
estimator (verl_ext), the `domain_grpo` v1 trainer mode and the `domain_single_turn_agent` agent loop, and installs
the verl repairs every recipe needs (`recipe.common.plugins`).
"""

import verl_ext  # noqa: F401  (register_adv_est("domain_grpo"))
from recipe.common import plugins as common_plugins
from recipe.domain_grpo import agent_loop, trainer  # noqa: F401  (register_trainer, agent-loop register)

common_plugins.install()  # repairs of verl 0.9.1 bugs the recipes' runs hit (recipe/common/verl_fixes.py)
