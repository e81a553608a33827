"""H&E stain jitter in the HED colour space: a label-preserving, non-geometric domain prior for histopathology.

An H&E slide's tissue class does not depend on how strongly its haematoxylin and eosin happen to be stained (lab,
scanner and batch vary); stain augmentation in the HED space is the standard way to say so (Tellez et al., "Quantifying
the effects of data augmentation and stain color normalization in convolutional neural networks for computational
pathology", MedIA 2019: "HED-light" σ = 0.05, "HED-strong" σ = 0.2). Colour deconvolution (Ruifrok & Johnston, Anal.
Quant. Cytol. Histol. 2001) maps RGB optical density to stain concentrations; each stain channel s is perturbed as
s' = α·s + β, α ~ U(1 − σ, 1 + σ), β ~ U(−σ, σ), drawn per sample from its seeded generator, and mapped back to RGB.

Registered as the built-in `hed_jitter` (photometric: RGB in [0, 1]) by `verl_ext.transforms`, which imports this
module (this module imports nothing from it, so there is no import circle); data_prep whitelists it for PathMNIST only
(H&E-stained colorectal histology). Its strength is `domain.transforms.params.hed_jitter.sigma` (default 0.05). A
user's own prior has the same shape: define `fn(image, generator, **params)`, call
`verl_ext.transforms.register_transform` at import, then list the module in `domain.transforms.modules`.
"""

from __future__ import annotations

import torch

# Stain vectors (rows: haematoxylin, eosin, DAB) in RGB optical density, Ruifrok & Johnston 2001.
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64)
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)
_EPS = 1e-6  # floor of the RGB intensity before the log (optical density of a black pixel stays finite)


def rgb_to_hed(rgb: torch.Tensor) -> torch.Tensor:
    """Stain concentrations `[..., 3, H, W]` (H, E, D) of RGB in [0, 1] `[..., 3, H, W]` (optical-density units)."""
    density = -torch.log(rgb.double().clamp_min(_EPS))  # [..., 3, H, W]
    return torch.einsum("...chw,cs->...shw", density, HED_FROM_RGB.to(density.device))  # [..., 3, H, W]


def hed_to_rgb(hed: torch.Tensor) -> torch.Tensor:
    """The inverse of `rgb_to_hed`, clipped to [0, 1]: `[..., 3, H, W]` float64."""
    density = torch.einsum("...shw,sc->...chw", hed.double(), RGB_FROM_HED.to(hed.device))  # [..., 3, H, W]
    return torch.exp(-density).clamp(0.0, 1.0)


def hed_jitter(image: torch.Tensor, generator: torch.Generator, sigma: float = 0.05) -> torch.Tensor:
    """One H&E stain jitter of an RGB image in [0, 1].

    Args:
        image: `[..., 3, H, W]` RGB in [0, 1].
        generator: the sample's seeded generator (the same seed gives the same α, β).
        sigma: strength σ ≥ 0: α ~ U(1 − σ, 1 + σ), β ~ U(−σ, σ) per stain channel; 0 is the identity up to rounding.

    Returns:
        `[..., 3, H, W]` RGB in [0, 1], in `image`'s dtype.

    Note:
        The paper leaves the prior family open; Tellez et al. perturb all three HED channels (the D channel is near
        zero on H&E slides); β is added in optical-density units, as there.
    """
    if image.shape[-3] != 3:
        raise ValueError(f"hed_jitter needs RGB images [..., 3, H, W]; got shape {tuple(image.shape)}")
    if not sigma >= 0:
        raise ValueError(f"domain.transforms.params.hed_jitter.sigma={sigma} must be >= 0")
    uniform = torch.rand(2, 3, generator=generator, dtype=torch.float64)  # [2, 3] in [0, 1)
    alpha = 1.0 + sigma * (2.0 * uniform[0] - 1.0)  # [3]
    beta = sigma * (2.0 * uniform[1] - 1.0)  # [3]
    hed = rgb_to_hed(image)  # [..., 3, H, W]
    jittered = hed * alpha.view(3, 1, 1).to(hed.device) + beta.view(3, 1, 1).to(hed.device)
    return hed_to_rgb(jittered).to(image.dtype)
