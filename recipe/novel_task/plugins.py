"""Everything the novel-task study registers with verl (for `VERL_USE_EXTERNAL_MODULES`): the recipe's own plugins
(estimator, `domain_grpo` trainer mode, agent loop) and the `rollout_dump` trainer mode built on them."""

import recipe.domain_grpo.plugins  # noqa: F401
from recipe.novel_task import trainer  # noqa: F401  (register_trainer("rollout_dump"))
