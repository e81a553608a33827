"""The novel-task study (arXiv 2506.23508): jigsaw puzzles learnt by GRPO, answer-only SFT and SFT on GRPO's correct
rollouts, and what each forgets of prior tasks. See README.md."""
