"""The second view's memory in the GPU launch scripts: the per-GPU token budget is divided by 1 + V for the methods
with a transformed view (examples/run_qwen25vl_rs.sh), undivided for those without, and start-up prints the load."""

import pytest
from launch_helpers import ENTRY, RS_WHITELIST, compose_run, script_argv, write_rows

from recipe.domain_grpo.startup import validate_run_config, view_token_budget

KEY = "actor_rollout_ref.actor.ppo_max_token_len_per_gpu="


def _budget(argv: list[str]) -> int:
    return int([a for a in argv if a.startswith(KEY)][-1].split("=", 1)[1])


@pytest.mark.parametrize(
    ("method", "env", "budget"),
    [
        ("dc_dr", {}, 6144),  # 12288 / (1 + 1 view)
        ("dr", {}, 6144),
        ("grpo", {}, 12288),  # no view: verl's budget
        ("oc", {}, 12288),
        ("dc", {"VIEWS": "3"}, 3072),  # mixture over 3 rotations: 12288 / 4
        ("dc_dr", {"BASE_TOKEN_LEN_PER_GPU": "20000"}, 10000),
        ("dc_dr", {"MAX_TOKEN_LEN_PER_GPU": "9000"}, 9000),  # set explicitly: kept
    ],
)
def test_rs_script_divides_the_budget_by_the_views(tmp_path, method, env, budget):
    train = write_rows(tmp_path / "train.parquet", RS_WHITELIST)
    argv = script_argv("run_qwen25vl_rs.sh", tmp_path, {"TRAIN_FILES": train, **env}, f"method={method}")
    assert argv[:2] == ENTRY and _budget(argv) == budget


def test_med_and_jigsaw_scripts_follow_the_rule(tmp_path):
    train = write_rows(tmp_path / "train.parquet", ["identity", "vflip"])
    argv = script_argv("run_qwen25vl_med.sh", tmp_path, {"TRAIN_FILES": train, "DATASET": "organamnist"})
    assert _budget(argv) == 6144
    argv = script_argv("run_qwen25vl_jigsaw.sh", tmp_path, {"TRAIN_FILES": train})
    assert _budget(argv) == 16384  # plain GRPO: no view


def test_the_launched_config_prints_the_effective_load(tmp_path, capsys):
    train = write_rows(tmp_path / "train.parquet", RS_WHITELIST)
    argv = script_argv("run_qwen25vl_rs.sh", tmp_path, {"TRAIN_FILES": train})
    config = compose_run(argv[2:])
    domain = validate_run_config(config)
    assert view_token_budget(config, domain)["update_tokens"] == 12288  # 6144 original + 6144 transformed
    assert "update up to 12288 tokens per GPU (ppo_max_token_len_per_gpu=6144)" in capsys.readouterr().out
