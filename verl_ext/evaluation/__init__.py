"""Evaluation of a (fine-tuned) VLM on classification rows: accuracy, confusion, and invariance metrics.

    python -m verl_ext.evaluation --model DIR --data test.parquet --out DIR [--transforms rot90,rot180,hflip]
        [--backend hf|vllm] [--max-new-tokens N] [--batch-size B] [--limit N]

Light on purpose: the submodules (`metrics`, `backends`, `runner`, `plots`) import torch/transformers/vLLM lazily.
"""
