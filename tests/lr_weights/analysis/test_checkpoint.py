"""Single-file checkpoints and diffusers folders: the LDM <-> diffusers mapping checked against
sd-scripts' own recorded module trees, and tiny models loaded from every format."""

import json
import os

import pytest
import torch

from lr_weights.analysis.base_model import load_denoiser, model_of_path
from lr_weights.analysis.checkpoint import ldm_unet_path, shipped_config
from lr_weights.analysis.measure import MeasureSettings, draw_samples, predict_all
from lr_weights.models.reference import _DATA as SKELETONS

from tests.tolerances import fp_tolerance
from .models_on_disk import write_diffusers_folder, write_flux_file, write_single_file

pytest.importorskip("diffusers")
pytest.importorskip("transformers")


def _leaves(model):
    """{path: weight shape} of every Linear / Conv2d."""
    return {name: tuple(m.weight.shape) for name, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}


def _recorded(name):
    """{path: weight shape} of the Linear / Conv2d layers of a recorded sd-scripts skeleton."""
    with open(os.path.join(SKELETONS, f"{name}.json"), encoding="utf-8") as handle:
        modules = json.load(handle)["modules"]
    shapes = {}
    for e in modules:
        if e["type"] == "Linear":
            shapes[e["path"]] = (e["out_features"], e["in_features"])
        elif e["type"] == "Conv2d":
            shapes[e["path"]] = (e["out_channels"], e["in_channels"]) + tuple(e["kernel"])
    return shapes


def _meta_unet(family):
    import diffusers

    with torch.device("meta"):
        return diffusers.UNet2DConditionModel(**shipped_config(f"{family}_unet"))


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_shipped_sd_configs_build_sd_scripts_layers(family):
    # sd-scripts' SD1/SD2 U-Net has diffusers' module names: the shipped config must give its layers exactly.
    assert _leaves(_meta_unet(family)) == _recorded(f"{family}_unet")


def test_sdxl_mapping_gives_sd_scripts_sdxl_names():
    # sd-scripts' SDXL U-Net has the LDM names: every diffusers layer maps onto exactly its layer.
    unet = _meta_unet("sdxl")
    up_attention = [t.startswith("CrossAttn") for t in unet.config.up_block_types]
    mapped = {ldm_unet_path(path, up_attention): shape for path, shape in _leaves(unet).items()}
    assert None not in mapped
    assert mapped == _recorded("sdxl_unet")


@pytest.mark.parametrize("model", ["sd1", "sd2", "sdxl"])
def test_single_file_loads_the_same_model_as_the_diffusers_folder(model, tmp_path):
    folder = write_diffusers_folder(tmp_path / "folder", model)
    single = write_single_file(tmp_path / "model.safetensors", model)
    assert model_of_path(single) == model
    from_folder = load_denoiser(str(folder), torch.device("cpu"), torch.float32, model)
    from_file = load_denoiser(str(single), torch.device("cpu"), torch.float32)
    assert sorted(from_folder.layers) == sorted(from_file.layers)
    assert from_file.tokenizes is False and from_folder.tokenizes is True
    settings = MeasureSettings(samples=2, timesteps=2)
    samples = draw_samples(from_folder, settings, 32)
    expected = predict_all(from_folder, samples, from_folder.encode([""]), 2)
    # Same weights, same modules, same empty-prompt ids: the same float32 operations in the same order.
    assert torch.equal(predict_all(from_file, samples, from_file.encode([""]), 2), expected)
    assert expected.abs().max() > 0.1


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_flux_file_loads_with_its_sizes(prefix, tmp_path):
    from lr_weights.models.tiny_flux import FluxConfig

    config = FluxConfig(depth=2, depth_single=3)
    _, flux = write_flux_file(tmp_path / "flux.safetensors", config, prefix=prefix)
    assert model_of_path(str(tmp_path / "flux.safetensors")) == "flux"
    denoiser = load_denoiser(str(tmp_path / "flux.safetensors"), torch.device("cpu"), torch.float32)
    assert denoiser.net.cfg == config  # every size read back, no rotary axes for a head width of 16
    for name, tensor in flux.state_dict().items():
        assert torch.equal(denoiser.net.state_dict()[name], tensor)
    assert "lora_unet_double_blocks_1_img_attn_qkv" in denoiser.layers


def test_flux_rotary_positions_are_rotations():
    # FLUX.1's RoPE turns pairs of each head's channels: norms are kept, position 0 is the identity.
    from lr_weights.models.tiny_flux import apply_rotary, rotary_angles

    positions = torch.tensor([[0, 0, 0], [0, 3, 5]])
    angles = rotary_angles(positions, (4, 6, 6), 10000)
    x = torch.randn(2, 16, dtype=torch.float64)
    turned = apply_rotary(x.float(), angles).double()
    assert torch.equal(turned[0], x[0].float().double())
    # Each output is c·a − s·b in float32 from float32 inputs: 2 products and a sum, on |c·a| + |s·b|
    # ≤ |a| + |b|; the float64 reference differs by that bound plus the inputs' own rounding (1 eps).
    first = x[1, 4:6]  # the first pair of axis 1 turns by row x theta^0 = 3 radians
    cos, sin = torch.cos(torch.tensor(3.0, dtype=torch.float64)), torch.sin(torch.tensor(3.0, dtype=torch.float64))
    expected = torch.stack([first[0] * cos - first[1] * sin, first[0] * sin + first[1] * cos])
    bound = fp_tolerance(torch.float32, 4, float(first.abs().sum()))
    assert (turned[1, 4:6] - expected).abs().max() <= bound
    assert abs(turned[1].norm() - x[1].norm()) <= fp_tolerance(torch.float32, 4 + 16, float(x[1].abs().sum()))
