"""Everything the novel-task study registers with verl (for `VERL_USE_EXTERNAL_MODULES`): the `rollout_dump` trainer
mode, the domain recipe's registrations it builds on (estimator, `domain_grpo` trainer mode, agent loop) and the verl
repairs every recipe needs (`recipe.common.plugins`)."""

import recipe.domain_grpo.plugins  # noqa: F401
from recipe.common import plugins as common_plugins
from recipe.novel_task import trainer  # noqa: F401  (register_trainer("rollout_dump"))

common_plugins.install()  # repairs of verl 0.9.1 bugs the recipes' runs hit (recipe/common/verl_fixes.py)
