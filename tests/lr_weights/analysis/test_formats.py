"""Every file format `analyze` reads gives each module the ΔW the network itself applies.

The oracle is the network's own forward: a file is written by lr_weights' network for that format
(LoRA, LoCon, DyLoRA, FLUX with and without split_qkv, LyCORIS LoKr and LoHa — the latter through
lycoris-lora's modules), the same network is applied to a second copy of the model, and for every
Linear layer ΔWᵀ = layer(I) − (I·Wᵀ + b), the adapter's output on the identity. All in float64.
"""

import math

import pytest
import torch
from torch.nn import functional as F

from lr_weights.analysis.deltas import read_deltas
from lr_weights.analysis.measure import MeasureSettings, measure
from lr_weights.analysis.tiny_denoisers import tiny_denoiser
from lr_weights.models.tiny_flux import FluxConfig

from tests.tolerances import float64, float64_agreement, fp_tolerance

SMALL_FLUX = FluxConfig(depth=2, depth_single=2)
FORMATS = [
    ("sd1", "lora", {}),
    ("sd1", "lora", {"conv_dim": "2", "conv_alpha": "1"}),
    ("sd1", "dylora", {"unit": "2"}),
    ("sdxl", "lora", {"conv_dim": "2"}),
    ("flux", "flux", {}),
    ("flux", "flux", {"split_qkv": "True"}),
    ("sd1", "lycoris", {"algo": "lokr", "factor": "4"}),
    ("sd1", "lycoris", {"algo": "loha"}),
    ("sd1", "lycoris", {"algo": "locon", "dora_wd": "True"}),
    ("sd1", "lycoris", {"algo": "ia3"}),
]
IDS = ["lora", "locon", "dylora", "sdxl-locon", "flux", "flux-split_qkv", "lokr", "loha", "dora", "ia3"]


def _model(model):
    with float64():
        return tiny_denoiser(model, seed=0, config=SMALL_FLUX if model == "flux" else None)


def _network(module_name, denoiser, args):
    if module_name == "lycoris":
        pytest.importorskip("lycoris")
    module = __import__(f"lr_weights.{module_name}", fromlist=["create_network"])
    encoders = list(denoiser.text_encoders) if denoiser.model in ("sdxl", "flux") else denoiser.text_encoders[0]
    torch.manual_seed(1)
    with float64():
        network = module.create_network(1.0, 4, 2, None, encoders, denoiser.net, **args)
    with torch.no_grad():
        for parameter in network.parameters():  # as after training: no factor left at its zero init
            parameter.normal_(0, 0.2)
    return network, encoders


@pytest.mark.parametrize("model, module_name, args", FORMATS, ids=IDS)
def test_file_delta_is_what_the_network_applies(model, module_name, args, tmp_path):
    reader = _model(model)
    applied = _model(model)  # the same weights (same seed), to carry the network's patched forwards
    network, encoders = _network(module_name, applied, args)
    path = tmp_path / "file.safetensors"
    network.save_weights(str(path), None, {})
    network.apply_to(encoders, applied.net, True, True)
    network.eval()

    deltas = read_deltas(path, reader.layers, reader.arch, reader.model)
    checked = 0
    for module in deltas.modules:
        layer = applied.layers[module.name]
        if not isinstance(layer, torch.nn.Linear):
            continue
        identity = torch.eye(layer.in_features, dtype=torch.float64)
        with torch.no_grad():
            expected = (layer(identity) - F.linear(identity, layer.weight, layer.bias)).T
        delta = module.weight(torch.device("cpu")).double()
        assert delta.shape == expected.shape
        scale = float(expected.abs().max()) + float(layer.weight.abs().max())
        assert (delta - expected).abs().max() <= float64_agreement(scale), module.name
        checked += 1
    assert checked >= 10 and float(max(m.weight(torch.device("cpu")).abs().max() for m in deltas.modules)) > 1e-3
    if "split_qkv" in args:
        assert any(m.name.endswith("img_attn_qkv") for m in deltas.modules)

    result = measure(reader, [deltas], MeasureSettings(samples=2, timesteps=2, batch_size=2)).files[0]
    shares = [b.share for b in result.blocks]
    assert result.total > 0 and kind_of(module_name, args) in result.kind
    assert math.fsum(shares) == pytest.approx(1.0, abs=fp_tolerance(torch.float64, 2 * len(shares)))


def kind_of(module_name, args):
    return f"LyCORIS ({'kron' if args['algo'] == 'lokr' else args['algo']})" if module_name == "lycoris" else "LoRA"
