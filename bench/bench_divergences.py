"""Chunked full-vocabulary KL + JS (verl_ext.divergences) against the naive fp32 computation.

Each measurement runs in a fresh subprocess, so peak RSS belongs to that method alone:
    extra memory = peak RSS (VmHWM, reset once the inputs exist) − RSS once the inputs exist.
Inputs are bf16 logits `[1, tokens, vocab]` (what a bf16 model returns), all tokens valid. Errors are measured
against a float64 computation done row block by row block (the float64 reference itself would not fit otherwise).

    python bench/bench_divergences.py --tokens 4096 --vocab 151936 --repeats 3 --out bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch

LN2 = math.log(2.0)


def naive_kl_js(
    a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """What one writes first: whole-tensor fp32 log-softmaxes, probabilities and products."""
    log_p = a.to(dtype).log_softmax(-1)  # [1, T, V]
    log_q = b.to(dtype).log_softmax(-1)  # [1, T, V]
    p, q = log_p.exp(), log_q.exp()  # [1, T, V] each
    kl = (p * (log_p - log_q)).sum(-1)  # [1, T]
    log_m = torch.logaddexp(log_p, log_q) - LN2  # [1, T, V]
    js = 0.5 * ((p * (log_p - log_m)).sum(-1) + (q * (log_q - log_m)).sum(-1)) / LN2  # [1, T]
    return kl, js


def chunked_kl_js(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from verl_ext.divergences import full_vocab_divergences

    mask = torch.ones(a.shape[:2], dtype=torch.bool)
    out = full_vocab_divergences(a, b, mask, ("kl", "js"))
    return out["kl"], out["js"]


def float64_reference(a: torch.Tensor, b: torch.Tensor, rows: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    kls, jss = [], []
    for start in range(0, a.shape[1], rows):
        kl, js = naive_kl_js(a[:, start : start + rows], b[:, start : start + rows], torch.float64)
        kls.append(kl)
        jss.append(js)
    return torch.cat(kls, 1), torch.cat(jss, 1)


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _reset_peak_rss() -> None:
    """Reset the kernel's high-water mark (VmHWM) to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss() -> int:
    """VmHWM, the peak RSS since the last reset, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def _inputs(tokens: int, vocab: int, rows: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """bf16 logits of two close views, generated block by block (no whole-tensor fp32 temporaries)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.empty(1, tokens, vocab, dtype=torch.bfloat16)
    b = torch.empty_like(a)
    for start in range(0, tokens, rows):
        block = torch.randn(1, min(rows, tokens - start), vocab, generator=gen) * 2
        a[:, start : start + rows] = block
        b[:, start : start + rows] = block + torch.randn(block.shape, generator=gen) * 0.5
    return a, b


def child(method: str, tokens: int, vocab: int, repeats: int, threads: int) -> dict:
    """One method in this (fresh) process: time, peak extra RSS, and the error against float64."""
    torch.set_num_threads(threads)
    a, b = _inputs(tokens, vocab)
    fn = {"naive": naive_kl_js, "chunked": chunked_kl_js}[method]
    fn(a[:, :8], b[:, :8])  # warm-up: imports and one-off allocations are not the method's memory
    base = _rss()
    _reset_peak_rss()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        kl, js = fn(a, b)
        times.append(time.perf_counter() - start)
    peak_extra = _peak_rss() - base
    ref_kl, ref_js = float64_reference(a, b)
    return {
        "method": method,
        "tokens": tokens,
        "vocab": vocab,
        "seconds_min": min(times),
        "seconds_all": times,
        "peak_extra_bytes": peak_extra,
        "max_abs_err_kl": (kl.double() - ref_kl).abs().max().item(),
        "max_abs_err_js": (js.double() - ref_js).abs().max().item(),
    }


def run(method: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--tokens", str(args.tokens), "--vocab", str(args.vocab)]
    cmd += ["--repeats", str(args.repeats), "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(results: dict, args: argparse.Namespace) -> str:
    naive, chunked = results["naive"], results["chunked"]
    gib = 1024**3
    mem_ratio = chunked["peak_extra_bytes"] / naive["peak_extra_bytes"]
    speed = naive["seconds_min"] / chunked["seconds_min"]
    lines = [
        f"Command: `python bench/bench_divergences.py --tokens {args.tokens} --vocab {args.vocab} "
        f"--repeats {args.repeats} --threads {args.threads}`",
        f"Machine: {platform.machine()}, {psutil.cpu_count()} cores, torch {torch.__version__}; "
        f"inputs bf16 `[1, {args.tokens}, {args.vocab}]`, every token valid, KL and JS both computed.",
        "",
        "| method | time (min of repeats) | peak extra RSS | max abs err KL vs fp64 | max abs err JS vs fp64 |",
        "|---|---|---|---|---|",
    ]
    for r in (naive, chunked):
        lines.append(
            f"| {r['method']} | {r['seconds_min']:.2f} s | {r['peak_extra_bytes'] / gib:.2f} GiB | "
            f"{r['max_abs_err_kl']:.1e} | {r['max_abs_err_js']:.1e} |"
        )
    lines += [
        "",
        f"Chunked / naive peak extra memory: {mem_ratio:.1%} (target <= 25%). "
        f"Speed-up: {speed:.2f}x (target >= 1). Error target <= 1e-5.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="markdown file whose '## divergences' section is replaced with the result")
    parser.add_argument("--child", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.tokens, args.vocab, args.repeats, args.threads)))
        return
    if args.out:  # imported before the minutes of measuring, so a broken import fails at once
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from bench.results_file import replace_section
    results = {m: run(m, args) for m in ("chunked", "naive")}
    text = report(results, args)
    print(text)
    if args.out:
        replace_section(args.out, "divergences", "Chunked full-vocabulary KL + JS vs naive fp32", text)


if __name__ == "__main__":
    main()
