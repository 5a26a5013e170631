"""fa=1 (LoRA-FA): lora_down frozen at its random init, only lora_up trains, block LR intact."""

import math

import pytest
import torch
from torch import nn

from lr_weights import lora
from lr_weights.errors import NetworkArgError
from lr_weights.adapters.lora import LoRAModule
from lr_weights.models.tiny import UNetConfig, build_tiny_sd

from tests.tolerances import fp_tolerance


def small_sd():
    return build_tiny_sd(0, UNetConfig(widths=(8, 16, 16, 16), heads=2, context_dim=16, groups=4))


def fa_network(**args):
    te, unet = small_sd()
    torch.manual_seed(0)
    network = lora.create_network(1.0, 4, 2, None, te, unet, fa="1", conv_dim="2", **args)
    network.apply_to(te, unet, True, True)
    return te, unet, network


def test_only_lora_up_is_trainable_and_in_groups():
    _, _, network = fa_network(down_lr_weight="sine", loraplus_unet_lr_ratio="4")
    params, descriptions = network.prepare_optimizer_params(1e-4, 1e-3, 1e-3, with_descriptions=True)
    network.prepare_grad_etc(None, None)
    in_groups = {id(p) for g in params for p in g["params"]}
    ups = {id(m.lora_up.weight) for m in network.all_loras}
    downs = {id(m.lora_down.weight) for m in network.all_loras}
    assert in_groups == ups
    assert {id(p) for p in network.get_trainable_params()} == ups
    assert not any(m.lora_down.weight.requires_grad for m in network.all_loras)
    # block LR and LoRA+ still shape the groups; with down frozen each U-Net block keeps only its plus twin
    assert descriptions[0] == "textencoder"
    assert descriptions[1:] and all(d.startswith("unet_block") and d.endswith(" plus") for d in descriptions[1:])
    assert not in_groups & downs


def test_training_changes_only_lora_up_and_the_file_format_is_unchanged(tmp_path):
    te, unet, network = fa_network(down_lr_weight="sine")
    before = {k: v.clone() for k, v in network.state_dict().items()}
    params, _ = network.prepare_optimizer_params(1e-3, 1e-2, 1e-2, with_descriptions=True)
    optimizer = torch.optim.AdamW(params)
    network.train()
    for step in range(2):
        x = torch.randn(1, 4, 16, 16)
        loss = (unet(x, torch.tensor([10]), te(torch.randint(0, 1000, (1, 16)))) - x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = network.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in after if "lora_down" in k or k.endswith(".alpha"))
    assert any(not torch.equal(after[k], before[k]) for k in after if "lora_up" in k)
    path = tmp_path / "fa.safetensors"
    network.save_weights(str(path), torch.float32, {})
    from safetensors.torch import load_file

    keys = set(load_file(str(path)))
    assert keys == set(after) and all(k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in keys)


def test_same_seed_same_frozen_projection_as_upstream_lora_fa():
    """sd-scripts' networks.lora_fa: nn defaults for down and up, then down ~ N(0, 2/(in+r)), up = 0."""
    base = nn.Linear(32, 48)
    torch.manual_seed(3)
    module = LoRAModule("lora_te_x", base, dim=8, alpha=4.0, fa=True)
    after_ours = torch.rand(1)
    torch.manual_seed(3)
    down = nn.Linear(32, 8, bias=False)
    nn.Linear(8, 48, bias=False)
    nn.init.normal_(down.weight, std=math.sqrt(2.0 / (32 + 8)))
    after_reference = torch.rand(1)
    assert torch.equal(module.lora_down.weight, down.weight)
    assert torch.equal(after_ours, after_reference)


def test_max_norm_scales_only_lora_up():
    _, _, network = fa_network()
    for m in network.all_loras:
        with torch.no_grad():
            m.lora_up.weight.normal_(std=10.0)
    downs = [m.lora_down.weight.clone() for m in network.all_loras]
    keys_scaled, _, max_norm = network.apply_max_norm_regularization(1.0, "cpu")
    # The reported norm is norm · (max / norm) in float32: two roundings (tests/tolerances.py).
    assert keys_scaled > 0 and max_norm == pytest.approx(1.0, rel=fp_tolerance(torch.float32, 2))
    assert all(torch.equal(a, m.lora_down.weight) for a, m in zip(downs, network.all_loras))


def test_flag_is_validated():
    te, unet = small_sd()
    with pytest.raises(NetworkArgError) as raised:
        lora.create_network(1.0, 4, 2, None, te, unet, fa="yes please")
    assert raised.value.key == "fa" and "yes please" in str(raised.value)
