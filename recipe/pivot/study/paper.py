"""The paper's numbers and settings, as labelled reference rows of the study's tables (arXiv 2510.16333).

Secondary sources (`shared/reference/studies.md` §2): check against the PDF before quoting them. The paper's model is
LLaVA-OneVision-style (SigLIP2-So400m + MLP projector + Qwen2.5-1.5B), not Qwen2.5-VL; its pairs are MMPR-v1.2
(external, off-policy) and its probes are ImageNet-scale: the rows are the direction to compare with, not targets.
"""

from __future__ import annotations

PAPER = "PIVOT (arXiv 2510.16333), secondary sources and the authors' public scripts"
SCRIPTS = "github.com/junha1125/PIVOT scripts/train/stage2-{dpo,sft}.sh (read December 2026)"

MODEL = (
    "LLaVA-OneVision-style: SigLIP2-So400m/16 at 384 px (google/siglip2-so400m-patch16-384, features of layer -2) "
    "+ 2-layer GELU MLP projector + Qwen2.5-1.5B-Instruct; stage-1 LLaVA training first, then DPO or SFT"
)

SETTINGS = {
    "model": MODEL,
    "dpo": "β 0.1, lr 1e-6, 3 epochs, weight decay 0, warm-up 3 %, cosine, effective batch 256 (8 GPUs x 1 x 32), "
    "encoder + projector + LLM trainable, no SFT term (gamma 0, dpo_alpha 1)",
    "sft": "the same 20k items with the chosen response, lr 5e-6 in the script (1e-5 in secondary sources), 3 epochs, "
    "weight decay 0, effective batch 256",
    "pairs": "MMPR-v1.2 (external preference pairs), 20,000 items",
    "linear_probe": "penultimate layer, mean over patches, L2-normalised, lbfgs logistic regression, C in 0.01..3.16",
}

FINDINGS = [
    ("every vision-only probe (linear, segmentation, Grad-CAM)", "DPO-evolved encoder > SFT-evolved encoder"),
    ("ImageNet linear probe, DPO vs SFT", "+1.8 to +2.0 points"),
    ("PIVOT encoder vs larger, more pretrained encoders", "better, at < 1 % of the vision-pretraining compute"),
]


def reference_lines() -> list[str]:
    """Markdown lines: the paper's findings and settings, labelled as reference."""
    lines = [f"## Reference: {PAPER}", "", f"Settings from {SCRIPTS}.", "", "| what | paper |", "|---|---|"]
    lines += [f"| {what} | {value} |" for what, value in FINDINGS]
    lines += [f"| settings: {k} | {v} |" for k, v in SETTINGS.items()]
    return lines + [""]
