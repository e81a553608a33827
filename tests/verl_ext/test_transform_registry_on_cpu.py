"""Pluggable domain priors: the registry, a user module named in config, and the shipped H&E stain jitter.

Issue 9, point 5: the dihedral group's diagonal flips, a transform registry (import path in config, seeded per row and
step), and one non-geometric prior as the worked example, covered by the config checks and the view exactly as the
built-in ones.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from verl_ext.config import DomainConfig, DomainConfigError
from verl_ext.priors.stain import hed_jitter, hed_to_rgb, rgb_to_hed
from verl_ext.transforms import apply_transform, draw_seed, registered_names, run_transform
from verl_ext.views import PatchLayout, patch_view, patchify, unpatchify

USER_MODULE = textwrap.dedent(
    """
    import torch
    from verl_ext.transforms import register_transform

    def darken(image, generator, amount=0.2):  # photometric: RGB in [0, 1]
        return image * (1.0 - amount)

    def crop_sides(image, generator):  # geometric, changes the size: the view fits it back to the grid
        return image[..., 1:-1].contiguous()

    register_transform("darken", darken, kind="photometric", defaults={"amount": 0.2})
    register_transform("crop_sides", crop_sides, kind="geometric")
    """
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_priors.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_priors"


def test_the_dihedral_group_and_the_stain_prior_are_built_in():
    names = registered_names()
    assert names[:8] == ("identity", "rot90", "rot180", "rot270", "hflip", "vflip", "transpose", "transverse")
    assert "hed_jitter" in names


def test_a_user_module_named_in_config_registers_its_transforms(user_module):
    domain = DomainConfig.from_dict(
        {"transforms": {"modules": [user_module], "names": ["darken"], "params": {"darken": {"amount": 0.5}}}}
    )
    assert domain.transforms.names == ("darken",) and domain.transforms.params == {"darken": {"amount": 0.5}}
    image = torch.full((3, 4, 4), 0.8)
    # 0.8 * (1 - 0.5) = 0.4
    torch.testing.assert_close(
        run_transform("darken", image, torch.Generator(), {"amount": 0.5}), torch.full_like(image, 0.4)
    )


def test_registry_config_errors_name_the_key(user_module):
    with pytest.raises(DomainConfigError, match=r"domain.transforms.modules: cannot import 'no_such_priors'"):
        DomainConfig.from_dict({"transforms": {"modules": ["no_such_priors"]}})
    with pytest.raises(DomainConfigError, match=r"domain.transforms.names: unknown transform\(s\) \['sepia'\]"):
        DomainConfig.from_dict({"transforms": {"names": ["sepia"]}})
    with pytest.raises(DomainConfigError, match=r"params.darken: unknown parameter\(s\) \['strength'\]; darken takes"):
        DomainConfig.from_dict(
            {"transforms": {"modules": [user_module], "names": ["darken"], "params": {"darken": {"strength": 1}}}}
        )


def test_a_fresh_process_gets_the_registration_from_the_config_alone(user_module, tmp_path):
    """What every verl process does (driver, agent-loop and actor workers): parse `domain:` and so import the module."""
    probe = "from verl_ext.config import DomainConfig; d = DomainConfig.from_dict({'transforms': {'modules': "
    probe += f"['{user_module}'], 'names': ['darken']}}}}); print(d.transforms.names)"
    env = {"PYTHONPATH": f"{tmp_path}:{sys.path[0]}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "('darken',)"


def _layout() -> PatchLayout:
    return PatchLayout(patch_size=2, temporal_patch_size=2, merge_size=2, image_mean=(0.5,) * 3, image_std=(0.25,) * 3)


def _patches(image01: torch.Tensor, layout: PatchLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """The processor's patches of an RGB image in [0, 1] `[3, H, W]` (normalised, duplicated over Tp)."""
    mean, std = torch.tensor(layout.image_mean).view(3, 1, 1), torch.tensor(layout.image_std).view(3, 1, 1)
    normalised = ((image01 - mean) / std).unsqueeze(0).unsqueeze(0).expand(1, 2, -1, -1, -1)  # [1, Tp, 3, H, W]
    pixels, grid = patchify(normalised.contiguous(), layout)
    return pixels, torch.tensor([grid])


def test_registered_transforms_go_through_the_view_like_built_in_ones(user_module):
    DomainConfig.from_dict({"transforms": {"modules": [user_module], "names": ["darken"]}})
    layout = _layout()
    image = torch.rand(3, 8, 12, generator=torch.Generator().manual_seed(0))  # [3, H=8, W=12]
    pixels, grid = _patches(image, layout)
    # photometric: un-normalised, darkened, normalised again — the same as patchifying the darkened image
    view, view_grid = patch_view(pixels, grid, "darken", layout)
    expected, _ = _patches(image * 0.8, layout)
    torch.testing.assert_close(view, expected, atol=1e-6, rtol=0)
    assert torch.equal(view_grid, grid)
    # size-changing: an 8 × 10 crop is fitted back to the original's 8 × 12 grid (the same image-token count; the
    # aspect ratio 1.25 is closer to 12 / 8 than to 8 / 12)
    view, view_grid = patch_view(pixels, grid, "crop_sides", layout)
    assert torch.equal(view_grid, grid) and view.shape == pixels.shape
    # a 90° turn swaps the grid, a diagonal flip too
    for name in ("rot90", "transpose"):
        _, turned = patch_view(pixels, grid, name, layout)
        assert turned.tolist() == [[1, 6, 4]]


def test_hed_round_trip_and_jitter_are_deterministic_per_seed():
    rgb = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.05
    torch.testing.assert_close(hed_to_rgb(rgb_to_hed(rgb)).float(), rgb, atol=1e-6, rtol=0)
    torch.testing.assert_close(hed_jitter(rgb, torch.Generator().manual_seed(3), sigma=0.0), rgb, atol=1e-6, rtol=0)
    a = hed_jitter(rgb, torch.Generator().manual_seed(3), sigma=0.05)
    b = hed_jitter(rgb, torch.Generator().manual_seed(3), sigma=0.05)
    c = hed_jitter(rgb, torch.Generator().manual_seed(4), sigma=0.05)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert 0 < (a - rgb).abs().mean() < 0.05  # a light perturbation
    strong = hed_jitter(rgb, torch.Generator().manual_seed(3), sigma=0.2)
    assert (strong - rgb).abs().mean() > (a - rgb).abs().mean()  # strength is the config key sigma
    with pytest.raises(ValueError, match="needs RGB"):
        hed_jitter(torch.rand(1, 4, 4), torch.Generator())


def test_the_stain_view_matches_the_jittered_pil_image_up_to_8_bit_rounding():
    layout = _layout()
    image = Image.fromarray(np.random.default_rng(2).integers(40, 220, (8, 8, 3), dtype=np.uint8))
    rgb = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)  # [3, 8, 8]
    pixels, grid = _patches(rgb, layout)
    seed = draw_seed(0, 5, "view:medmnist/pathmnist:7_0:hed_jitter")
    view, _ = patch_view(pixels, grid, "hed_jitter", layout, seed=seed)
    pil = apply_transform(image, "hed_jitter", seed=seed)
    expected, _ = _patches(torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1), layout)
    grey = 0.25 * 255.0  # normalised units -> grey levels
    assert (view - expected).abs().max() * grey <= 0.5 + 1e-3  # the PIL image is rounded to 8 bits, the view is not
    assert not torch.allclose(view, pixels)


def test_seeds_are_per_row_and_step_and_the_same_in_every_process():
    assert draw_seed(0, 3, "view:ucm:5_1:hed_jitter") == draw_seed(0, 3, "view:ucm:5_1:hed_jitter")
    assert len({draw_seed(0, step, f"view:ucm:{row}_0:x") for step in range(5) for row in range(5)}) == 25
    probe = "from verl_ext.transforms import draw_seed; print(draw_seed(0, 3, 'view:ucm:5_1:hed_jitter'))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert int(out.stdout) == draw_seed(0, 3, "view:ucm:5_1:hed_jitter")  # no salted hash()


def test_unpatchify_inverts_patchify_for_any_layout():
    layout = _layout()
    image = torch.rand(1, 2, 3, 8, 12)
    pixels, grid = patchify(image, layout)
    assert torch.equal(unpatchify(pixels, grid, layout), image)
