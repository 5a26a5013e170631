"""merge_lr_groups=1: one optimizer group per distinct U-Net LR, the same training otherwise."""

import pytest
import torch

from lr_weights import lora
from lr_weights.errors import NetworkArgError
from lr_weights.network.param_groups import ParamGroup, merge_param_groups
from lr_weights.models.tiny import UNetConfig, build_tiny_sd


def small_sd():
    return build_tiny_sd(0, UNetConfig(widths=(8, 16, 16, 16), heads=2, context_dim=16, groups=4))


def groups_of(merge, **args):
    te, unet = small_sd()
    torch.manual_seed(0)
    network = lora.create_network(1.0, 4, 1, None, te, unet, merge_lr_groups="1" if merge else "0", **args)
    network.apply_to(te, unet, True, True)
    params, descriptions = network.prepare_optimizer_params(1e-4, 1e-3, 1e-3, with_descriptions=True)
    return network, params, descriptions


def test_pure_merge_keeps_order_text_encoder_and_plus_twins_apart():
    p = [torch.nn.Parameter(torch.zeros(1)) for _ in range(7)]
    groups = [
        ParamGroup("textencoder", 1e-3, (p[0],)),
        ParamGroup("unet_block1", 1e-3, (p[1],)),
        ParamGroup("unet_block1 plus", 4e-3, (p[2],)),
        ParamGroup("unet_block2", 5e-4, (p[3],)),
        ParamGroup("unet_block4", 1e-3, (p[4],)),
        ParamGroup("unet_block4 plus", 4e-3, (p[5],)),
        ParamGroup("unet_block12", 5e-4, (p[6],)),
    ]
    merged = merge_param_groups(groups)
    assert [(g.description, g.lr, len(g.params)) for g in merged] == [
        ("textencoder", 1e-3, 1),
        ("unet_block1,4", 1e-3, 2),
        ("unet_block1,4 plus", 4e-3, 2),
        ("unet_block2,12", 5e-4, 2),
    ]
    assert merged[1].params == (p[1], p[4])
    assert merge_param_groups(groups[:2]) == groups[:2]  # nothing to merge: unchanged


def test_merged_groups_hold_the_same_parameters_at_the_same_lrs():
    args = dict(down_lr_weight="1,1,1,1,0.5,0.5,0.5,0.5,1,1,1,1", mid_lr_weight="1", up_lr_weight="0.5", loraplus_unet_lr_ratio="4")
    network, params, descriptions = groups_of(False, **args)
    _, merged_params, merged_descriptions = groups_of(True, **args)
    assert len(merged_params) == 5 < len(params)
    assert merged_descriptions[0] == "textencoder" and merged_descriptions[1].startswith("unet_block1,")

    def lr_by_shape(groups):
        return sorted((tuple(p.shape), g["lr"]) for g in groups for p in g["params"])

    assert lr_by_shape(merged_params) == lr_by_shape(params)


def test_merged_groups_train_identically():
    args = dict(down_lr_weight="1,1,1,1,0.5,0.5,0.5,0.5,1,1,1,1", up_lr_weight="0.5")

    def train(merge):
        network, params, _ = groups_of(merge, **args)
        optimizer = torch.optim.AdamW(params, foreach=True)
        for step in range(3):
            torch.manual_seed(step)
            for p in network.parameters():
                p.grad = torch.randn_like(p)
            optimizer.step()
        return network.state_dict()

    a, b = train(False), train(True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_flag_is_validated():
    te, unet = small_sd()
    with pytest.raises(NetworkArgError) as raised:
        lora.create_network(1.0, 4, 1, None, te, unet, merge_lr_groups="maybe")
    assert raised.value.key == "merge_lr_groups" and "maybe" in str(raised.value)
