"""What the three recipes share: the entry point, the verl repairs every run installs, trainer-mode helpers, the SFT
launcher (`entry.py`, `plugins.py`, `modes.py`, `sft.py`), and the resumable step runner and run-output readers
(`steps.py`, `runs.py`). Each recipe keeps only its method; none imports another recipe's names."""
