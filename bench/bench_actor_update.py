"""Actor update of `domain_grpo` vs `grpo` through verl's own loop on CPU (tiny Qwen2.5-VL, real Sentinel-2 tiles).

Runs the recipe three times on the same data, seed and model — GRPO (domain terms off), domain_grpo with the transformed
view detached, domain_grpo with gradient through both views — one transform per sample (`mode=fixed`, rot90), and reads
verl's own per-step timings (`timing_s/update_actor`, `timing_s/old_log_prob`, `timing_s/step`) from its file logger.
Peak memory is the peak summed RSS of the run's process tree (driver, Ray workers), sampled every 0.2 s.

    python bench/bench_actor_update.py --steps 4 --out bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recipe.common.runs import read_metrics  # noqa: E402

CONFIGS = {
    "grpo": ["algorithm.adv_estimator=grpo", "domain.constraint.enable=false", "domain.shaping.enable=false"],
    "domain_grpo, T(x) detached": ["domain.constraint.detach_transformed=true"],
    "domain_grpo, grad through both": ["domain.constraint.detach_transformed=false"],
}
COMMON = ["domain.transforms.names=[rot90]", "domain.transforms.mode=fixed", "data.max_prompt_length=1024"]


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run(name: str, overrides: list[str], work: Path, steps: int) -> dict:
    """One recipe run; returns verl's per-step timings and the peak tree RSS."""
    out = work / name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    env = dict(
        os.environ,
        WORK_DIR=str(out),
        MODEL_DIR=str(work / "model"),
        TRAIN_FILES=str(work / "data" / "train.parquet"),
        VAL_FILES=str(work / "data" / "test.parquet"),
        STEPS=str(steps),
        VERL_FILE_LOGGER_PATH=str(metrics_path),
    )
    cmd = ["bash", str(REPO / "examples" / "run_tiny_cpu.sh"), *COMMON, *overrides]
    with open(out / "train.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        peak, ps = 0, psutil.Process(proc.pid)
        while proc.poll() is None:
            peak = max(peak, _tree_rss(ps))
            time.sleep(0.2)
    if proc.returncode != 0:
        sys.exit(f"{name}: run failed, see {out / 'train.log'}")
    steps_data = list(read_metrics(metrics_path).values())
    later = steps_data[1:]  # step 1 includes one-off start-up work

    def mean(key: str) -> float:
        return statistics.mean(s[key] for s in later)

    return {
        "update_actor_s": mean("timing_s/update_actor"),
        "old_log_prob_s": mean("timing_s/old_log_prob"),
        "gen_s": mean("timing_s/gen"),
        "step_s": mean("timing_s/step"),
        "peak_rss_gib": peak / 1024**3,
    }


def report(results: dict, steps: int) -> str:
    base = results["grpo"]
    lines = [
        f"Command: `python bench/bench_actor_update.py --steps {steps}` (tiny random Qwen2.5-VL, 2 prompts x n=4, "
        "real Sentinel-2 tiles 112 px, response 24 tokens, fp32, 1 CPU rank; means over steps 2..N).",
        "",
        "| run | update_actor | x grpo | old_log_prob | x grpo | whole step | peak RSS (process tree) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['update_actor_s']:.2f} s | {r['update_actor_s'] / base['update_actor_s']:.2f} | "
            f"{r['old_log_prob_s']:.2f} s | {r['old_log_prob_s'] / base['old_log_prob_s']:.2f} | {r['step_s']:.2f} s "
            f"| {r['peak_rss_gib']:.1f} GiB |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--work", default=str(REPO / "bench" / "_work" / "actor_update"))
    parser.add_argument("--out", help="markdown file whose '## actor update' section is replaced")
    args = parser.parse_args()
    work = Path(args.work)
    if not (work / "data" / "train.parquet").exists():
        subprocess.run([sys.executable, "-m", "data_prep", "demo-rs", "--out", str(work / "data")], check=True)
    from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir

    build_tiny_model_dir(work / "model")
    results = {}
    for name, overrides in CONFIGS.items():
        results[name] = run(name, overrides, work, args.steps)
        print(name, json.dumps(results[name]), flush=True)
    text = report(results, args.steps)
    print(text)
    if args.out:
        sys.path.insert(0, str(REPO))
        from bench.results_file import replace_section

        replace_section(args.out, "actor_update", "Actor update: domain_grpo vs grpo through verl's loop", text)


if __name__ == "__main__":
    main()
