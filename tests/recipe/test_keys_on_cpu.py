"""Shared names are defined once (recipe/domain_grpo/keys.py); the trainer mode and validation import one way."""

import ast
import subprocess
import sys
from pathlib import Path

from recipe.domain_grpo import keys

RECIPE = Path(__file__).resolve().parents[2] / "recipe" / "domain_grpo"
# The modules that read or write these names.
USERS = ("worker.py", "trainer.py", "validation.py", "micro_batch.py", "agent_loop.py", "augment.py")


def test_no_user_spells_a_shared_name_itself():
    # (TRAINER_MODE's "domain_grpo" is also the estimator's registered name, spelt where the estimator is meant)
    values = {v for k, v in vars(keys).items() if k.isupper() and isinstance(v, str) and k != "TRAINER_MODE"}
    for name in USERS:
        tree = ast.parse((RECIPE / name).read_text())
        literals = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
        assert not literals & values, f"{name} spells {sorted(literals & values)}; import them from keys.py"


def test_validation_does_not_import_the_trainer_mode():
    code = "import sys, recipe.domain_grpo.validation; print('recipe.domain_grpo.trainer' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
