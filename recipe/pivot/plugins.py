"""Everything the PIVOT recipe registers with verl, in one importable module (for `VERL_USE_EXTERNAL_MODULES`).

verl imports the modules named there at `import verl` in every Ray process: this one registers the `dpo` advantage
estimator (`verl_ext.dpo.compute_dpo_advantage`), the `dpo` v1 trainer mode, the `dpo_pair_agent` agent loop and the
freezing FSDP engine (`recipe/pivot/freeze.py`), and installs the verl repairs every recipe needs
(`recipe.common.plugins`).
"""

from verl.trainer.ppo import core_algos

from recipe.common import plugins as common_plugins
from recipe.pivot import agent_loop, freeze, trainer  # noqa: F401  (register_trainer, agent-loop register, engine)
from verl_ext.dpo import compute_dpo_advantage

ADV_ESTIMATOR_NAME = "dpo"

core_algos.register_adv_est(ADV_ESTIMATOR_NAME)(compute_dpo_advantage)
common_plugins.install()  # repairs of verl 0.9.1 bugs the recipes' runs hit (recipe/common/verl_fixes.py)
