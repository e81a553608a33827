"""Probes of a vision encoder alone (PIVOT, arXiv 2510.16333): linear probe per block, patch segmentation probe,
gradient-magnitude maps and Grad-CAM, weight change per block. CLI: `python -m verl_ext.probes --help`.

Light to import: the submodules import torch / transformers / scikit-learn when used.
"""
