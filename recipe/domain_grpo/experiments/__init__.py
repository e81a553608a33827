"""Experiment matrix of the paper (methods × datasets × shots × seeds) and its paper-style tables.

    python -m recipe.domain_grpo.experiments run --spec recipe/domain_grpo/experiments/paper_matrix.yaml [--dry-run]
    python -m recipe.domain_grpo.experiments collect --runs outputs/paper_matrix --out outputs/paper_matrix/report

Light on purpose: nothing heavy is imported here.
"""
