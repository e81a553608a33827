"""The PIVOT study specs compose and validate: the GPU spec's DPO and SFT stages with the paper's settings through the
launch scripts into verl's configs; >= 3 training seeds; probes with floors over seeds and a user's parquet; the CPU
spec probes every image (no --limit) and reports itself as a machinery check."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from pivot_helpers import REPO, dpo_config, script_argv, tiny_model, write_pairs

from recipe.pivot.sft import train_command
from recipe.pivot.startup import validate_dpo_run
from recipe.pivot.study.runner import load_spec, plan, stage_argv

SETS = {"base": "/models/qwen", "train": "t.parquet", "test": "v.parquet"}


def _stages(spec_name: str, tmp_path: Path) -> dict[str, list[str]]:
    spec = load_spec(REPO / "recipe/pivot/study" / spec_name, {**SETS, "out": str(tmp_path)})
    return spec, {s.name: stage_argv(s)[0] for s in plan(spec)}


def _env_and_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """`env K=V ... bash SCRIPT ARGS` -> ({K: V}, ARGS)."""
    assert argv[0] == "env"
    k = argv.index("bash")
    return dict(item.split("=", 1) for item in argv[1:k]), argv[k + 2 :]


def test_gpu_spec_dpo_stage_has_the_papers_settings_and_validates(tmp_path):
    spec, stages = _stages("qwen25vl_3b.yaml", tmp_path)
    assert len(spec["vars"]["train_seeds"]) >= 3
    env, extra = _env_and_args(stages["dpo"])
    # start-up counts the rows with verl's dataset and the model's tokenizer: a real (tiny) model, one batch of rows
    env["TRAIN_FILES"] = write_pairs(tmp_path / "pairs.parquet", [("a", "b")] * 256)
    env["MODEL_PATH"] = str(tiny_model())
    argv = script_argv("run_pivot_dpo.sh", tmp_path, env, *extra)
    config = dpo_config(argv[2:])
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    validate_dpo_run(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    actor = config.actor_rollout_ref.actor
    # the paper's scripts: beta 0.1, lr 1e-6, 3 epochs, batch 256, weight decay 0 (verl's default 0.01)
    assert (config.dpo.beta, actor.optim.lr, config.trainer.total_epochs, config.data.train_batch_size) == (
        0.1,
        1e-6,
        3,
        256,
    )
    assert actor.optim.weight_decay == 0.0 and actor.optim.lr_scheduler_type == "cosine"


def test_gpu_spec_sft_stage_has_the_papers_settings_and_composes(tmp_path):
    import verl.trainer.config as cfg

    _, stages = _stages("qwen25vl_3b.yaml", tmp_path)
    env, extra = _env_and_args(stages["sft"])
    sft = tmp_path / "sft.parquet"
    sft.write_bytes(b"")
    argv = script_argv("run_pivot_sft.sh", tmp_path, {**env, "TRAIN_FILES": str(sft)}, *extra)
    rest, flags = argv[5:], {}
    while rest and rest[0].startswith("--"):
        flags[rest[0]], rest = rest[1], rest[2:]
    cmd, _ = train_command("all", flags["--train"], flags["--model"], flags["--out"], rest, nproc=8)
    overrides = cmd[cmd.index("verl.trainer.sft_trainer") + 1 :]
    with initialize_config_dir(config_dir=str(Path(cfg.__file__).parent), version_base=None):
        config = compose(config_name="sft_trainer_engine", overrides=overrides)
    assert (config.optim.lr, config.optim.weight_decay, config.trainer.total_epochs) == (5e-6, 0.0, 3)
    assert config.data.train_batch_size == 256


def test_probe_stages_use_floor_seeds_the_layout_sets_and_no_limit(tmp_path):
    _, gpu = _stages("qwen25vl_3b.yaml", tmp_path / "gpu")
    probes = gpu["probes"]
    assert probes[probes.index("--random-seeds") + 1] == "0,1,2" and "--limit" not in probes
    assert probes[probes.index("--probe-parquet") + 1] == "user=data/ucm/test.parquet"
    assert "s2-greener-half" in probes[probes.index("--tasks") + 1]
    cpu_spec, cpu = _stages("cpu_tiny.yaml", tmp_path / "cpu")
    assert (
        "--limit" not in cpu["probes"] and len(cpu["probes"][cpu["probes"].index("--random-seeds") + 1].split(",")) >= 3
    )
    assert cpu_spec["vars"]["machinery_check"] is True


def test_gpu_spec_plans_every_training_seed_and_a_dry_run_writes_the_skeleton(tmp_path):
    from recipe.pivot.study.runner import run

    spec = load_spec(REPO / "recipe/pivot/study/qwen25vl_3b.yaml", {**SETS, "out": str(tmp_path / "out")})
    names = [s.name for s in plan(spec)]
    for k in spec["vars"]["train_seeds"][1:]:  # the first seed is sft/dpo/probes themselves
        assert {f"sft_seed{k}", f"dpo_seed{k}", f"probes_seed{k}"} <= set(names)
    seeded = {s.name: s for s in plan(spec)}
    argv, env = stage_argv(seeded[f"dpo_seed{spec['vars']['train_seeds'][1]}"])
    assert f"/seed_{spec['vars']['train_seeds'][1]}/dpo" in " ".join(argv)
    run(spec, dry_run=True, echo=lambda _: None)
    assert (tmp_path / "out" / "report").is_dir()
