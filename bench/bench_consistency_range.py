"""DR's real range: the distribution of D_i on the warm start's sampled responses, for each way of computing it.

From the bench's SFT warm start (`bench/bench_effect.py`'s work folder), sample n responses per prompt of the demo's
train rows (transformers `generate`, temperature 1, top-p 1, like the CPU `hf` rollout), build each response's
transformed view the way the trainer does (`verl_ext.views.patch_view` on the processed image, one of the training
transforms drawn per response), teacher-force the response on both views and compute D_i with the trainer's own
functions (`verl_ext.domain_loss`): for `domain.shaping.level` token | sequence x `domain.shaping.scope` response |
answer. Token level: `token_divergence(js, full)` then `sample_consistency` (mean over the scope). Sequence level:
`sampled_log_ratio` -> `sequence_consistency` (f(r) of the summed log-ratio) -> `sample_consistency` (capped at 1).
Answer scope: `answer_span` of the tokens' texts (no well-formed answer: D_i = 0).

Writes `<work>/consistency_range.json`, a PNG histogram (one panel per option) and optionally the RESULTS.md section.

    python bench/bench_consistency_range.py --work /work/bench_effect_out --out bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.results_file import replace_section  # noqa: E402
from recipe.domain_grpo.demo_pipeline import Pipeline, Settings  # noqa: E402
from verl_ext.domain_loss import (  # noqa: E402
    answer_span,
    sample_consistency,
    sampled_log_ratio,
    sequence_consistency,
    token_divergence,
)
from verl_ext.evaluation.runner import load_rows, write_json_atomic  # noqa: E402

# (level, scope) of each option, in the order of the panels
OPTIONS = (("token", "response"), ("token", "answer"), ("sequence", "response"), ("sequence", "answer"))
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
TRAIN_TRANSFORMS = ("rot90", "rot180", "rot270")  # domain.transforms.names of the demo's runs (the config default)


def option_scores(
    original: torch.Tensor,
    transformed: torch.Tensor,
    labels: torch.Tensor,
    response_mask: torch.Tensor,
    answer_mask: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """D_i of each option, computed as the trainer does (`recipe/domain_grpo/worker.py:domain_fields` + the trainer's
    `sample_consistency`), for samples of one layout.

    Args:
        original: `[n, T, V]` logits of the original view at the positions predicting the response tokens.
        transformed: `[n, T, V]` the same under the transformed view.
        labels: `[n, T]` the sampled response tokens.
        response_mask: `[n, T]` bool, the real response tokens (not padding).
        answer_mask: `[n, T]` bool, the tokens inside the answer tags (`answer_span`), within `response_mask`.

    Returns:
        {"<level>/<scope>": `[n]` fp32 D_i in [0, 1]}.
    """
    out = {}
    for level, scope in OPTIONS:
        mask = response_mask if scope == "response" else answer_mask & response_mask  # [n, T]
        if level == "token":
            per_token = token_divergence(transformed, original, mask, "js", "full")  # [n, T] bits, 0 off the mask
        else:
            log_ratio = sampled_log_ratio(transformed, original, labels, mask)  # [n, T]
            score = sequence_consistency(log_ratio, mask)  # [n] f(r_i)
            per_token = score.unsqueeze(-1).expand_as(log_ratio).float()  # [n, T] f(r_i) on every position
        out[f"{level}/{scope}"] = sample_consistency(per_token, mask)  # [n]
    return out


def range_summary(values: Sequence[float]) -> dict[str, float]:
    """min, `QUANTILES`, max, mean, the share of exact zeros and the count of `values` (one option's D_i)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("range_summary needs at least one value")
    out = {"n": int(x.size), "min": float(x.min())}
    out |= {f"q{round(q * 100)}": float(np.quantile(x, q)) for q in QUANTILES}
    out |= {"max": float(x.max()), "mean": float(x.mean()), "zero_share": float(np.mean(x == 0.0))}
    return out


def sample_responses(model, processor, row, n: int, max_new_tokens: int, seed: int):
    """n sampled responses to one row: (the processor's inputs, `[n, T]` token ids, `[n, T]` bool real tokens)."""
    tokenizer = processor.tokenizer
    prompt = processor.apply_chat_template(row.messages, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[prompt], images=[row.image], return_tensors="pt")
    vision = [tokenizer.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>")]
    torch.manual_seed(seed)
    with torch.inference_mode():
        ids = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=None,
            num_return_sequences=n,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            suppress_tokens=vision,
        )
    responses = ids[:, enc["input_ids"].shape[1] :]  # [n, T]
    is_eos = responses == tokenizer.eos_token_id  # [n, T]
    # real tokens: up to and including the first EOS (verl's response_mask)
    before = torch.cumsum(is_eos.long(), dim=-1) - is_eos.long()  # [n, T] EOS seen strictly before
    return enc, responses, before == 0


def teacher_forced_logits(model, enc, responses: torch.Tensor, pixel_values, grid) -> torch.Tensor:
    """`[n, T, V]` fp32 logits predicting each response token after the prompt with the given image tensors."""
    n, width = responses.shape
    prompt = enc["input_ids"][0]
    input_ids = torch.cat([prompt.expand(n, -1), responses], dim=-1)  # [n, P+T]
    kwargs = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": pixel_values,
        "image_grid_thw": grid,
    }
    if "mm_token_type_ids" in enc:  # transformers 5 builds the M-RoPE ids from it
        mm = torch.zeros_like(input_ids)
        mm[:, : len(prompt)] = enc["mm_token_type_ids"][0]
        kwargs["mm_token_type_ids"] = mm
    with torch.inference_mode():
        logits = model(**kwargs, logits_to_keep=width + 1).logits[:, :width]  # positions P-1 .. P+T-2
    return logits.float()


def measure(work: Path, prompts: int, n: int, seed: int) -> dict[str, list[float]]:
    """D_i per sampled response for every option, from the warm start under `work`."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from verl_ext.views import PatchLayout, patch_view

    pipe = Pipeline(work, Settings(), echo=lambda _: None)
    model_dir = pipe.warm_start
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    layout = PatchLayout.from_processor(processor.image_processor)
    token_text = processor.tokenizer.decode
    rng = np.random.default_rng(seed)
    scores: dict[str, list[float]] = {f"{lv}/{sc}": [] for lv, sc in OPTIONS}
    no_answer = 0
    for k, row in enumerate(load_rows(pipe.train_parquet, limit=prompts)):
        enc, responses, real = sample_responses(model, processor, row, n, Settings().response_length, seed + k)
        pixels, grid = enc["pixel_values"], enc["image_grid_thw"]
        views = [patch_view(pixels, grid, str(rng.choice(TRAIN_TRANSFORMS)), layout, seed=seed) for _ in range(n)]
        original = teacher_forced_logits(model, enc, responses, torch.cat([pixels] * n), grid.repeat(n, 1))
        transformed = teacher_forced_logits(
            model, enc, responses, torch.cat([v[0] for v in views]), torch.cat([v[1] for v in views])
        )
        answer = torch.zeros_like(real)
        for i in range(n):
            real_ids = responses[i][real[i]].tolist()
            inside = answer_span([token_text([t]) for t in real_ids])
            answer[i, : len(inside)] = torch.tensor(inside, dtype=torch.bool)
            no_answer += not any(inside)
        for key, value in option_scores(original, transformed, responses, real, answer).items():
            scores[key] += value.tolist()
    scores["_no_answer"] = [float(no_answer)]
    return scores


def plot(path: Path, scores: Mapping[str, Sequence[float]], title: str) -> None:
    """One panel per option: histogram of log10 D_i over the samples with D_i > 0 (zeros counted in the title)."""
    from verl_ext.evaluation.plots import pyplot, save_figure_atomic

    plt = pyplot()
    keys = [f"{lv}/{sc}" for lv, sc in OPTIONS]
    positive = [v for k in keys for v in scores[k] if v > 0]
    lo, hi = (np.log10(min(positive)), np.log10(max(positive))) if positive else (-6.0, 0.0)
    bins = np.linspace(np.floor(lo), np.ceil(hi), 40)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), sharex=True)
    for ax, key in zip(axes, keys):
        x = np.asarray(scores[key])
        ax.hist(np.log10(x[x > 0]), bins=bins, color="C0")
        ax.set_title(
            f"level={key.split('/')[0]}, scope={key.split('/')[1]}\n{np.mean(x == 0):.0%} of D_i = 0", fontsize=9
        )
        ax.set_xlabel("log10 D_i (bits)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("sampled responses")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure_atomic(fig, path)


def markdown(result: Mapping) -> str:
    """The RESULTS.md section body."""
    a, s = result["args"], result["summary"]
    lines = [
        f"`python bench/bench_consistency_range.py --work {a['work']} --prompts {a['prompts']} --n {a['n']} --out "
        f"bench/RESULTS.md` ({result['machine']}, one thread, {result['minutes']:.1f} min). D_i of "
        f"{a['prompts']} x {a['n']} responses sampled (temperature 1) from the bench's SFT warm start on the demo-rs "
        "train prompts, each with one of rot90/rot180/rot270 as its transformed view, computed with the trainer's "
        f"own functions for each `domain.shaping.level` x `domain.shaping.scope`. {result['no_answer']} of "
        f"{s['token/response']['n']} responses had no well-formed `<answer>…</answer>` (D_i = 0 under the answer "
        "scope). Histogram: `bench/consistency_range.png` (log x, zeros left out and counted).",
        "",
        "| level / scope | min | 10% | 25% | median | 75% | 90% | 99% | max | mean | share D_i = 0 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in s.items():
        cells = [r[c] for c in ("min", "q10", "q25", "q50", "q75", "q90", "q99", "max", "mean")]
        lines.append(f"| {key} | " + " | ".join(f"{c:.3g}" for c in cells) + f" | {r['zero_share']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/work/bench_effect_out", help="bench_effect's work folder (its warm start)")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--n", type=int, default=4, help="responses per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the bench runs beside RL runs)")
    p.add_argument("--png", default=str(REPO / "bench" / "consistency_range.png"))
    p.add_argument("--out", default=None, help="bench/RESULTS.md to update (section consistency_range)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    work = Path(args.work)
    if not (work / ".done" / "sft.json").exists():
        print(f"error: --work {work} has no finished warm start (run bench/bench_effect.py first)", file=sys.stderr)
        return 2
    scores = measure(work, args.prompts, args.n, args.seed)
    no_answer = int(scores.pop("_no_answer")[0])
    result = {
        "args": {"work": str(work), "prompts": args.prompts, "n": args.n, "seed": args.seed},
        "machine": f"{platform.machine()}",
        "minutes": (time.monotonic() - started) / 60,
        "no_answer": no_answer,
        "summary": {k: range_summary(v) for k, v in scores.items()},
        "scores": scores,
    }
    write_json_atomic(work / "consistency_range.json", result)
    title = f"D_i on {args.prompts} x {args.n} warm-start responses (demo-rs train prompts, rot90/180/270 views)"
    plot(Path(args.png), scores, title)
    body = markdown(result)
    print(body)
    if args.out:
        replace_section(args.out, "consistency_range", "DR's range: D_i per option on the warm start's rollouts", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
