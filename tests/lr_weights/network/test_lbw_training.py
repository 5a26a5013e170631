"""`lbw_weights=`: an LBW vector or preset as training weights (BASE x text-encoder LR, blocks x U-Net LR).

The table below is what docs/dylora_lbw.md documents: each LBW preset (17-value SD vectors, applied
by block name on SDXL, as LBW does) as down/mid/up lists. Blocks a vector does not name get 0.
"""

import logging

import pytest

from lr_weights import dylora, lora
from lr_weights.archs.blocks import SD, SDXL
from lr_weights.errors import NetworkArgError
from lr_weights.args.lbw import lbw_to_network_args
from lr_weights.args.settings import lbw_training_weights
from lr_weights.models.tiny import build_tiny_sd
from lr_weights.args.weights import resolve_block_lr_weights

PRESETS = [
    # arch, preset, BASE, down_lr_weight, mid_lr_weight, up_lr_weight
    ("sd", "ALL", 1, "0,1,1,0,1,1,0,1,1,0,0,0", "1", "0,0,0,1,1,1,1,1,1,1,1,1"),
    ("sd", "INS", 1, "0,1,1,0,1,0,0,0,0,0,0,0", "0", "0,0,0,0,0,0,0,0,0,0,0,0"),
    ("sd", "IND", 1, "0,0,0,0,0,1,0,1,1,0,0,0", "0", "0,0,0,0,0,0,0,0,0,0,0,0"),
    ("sd", "INALL", 1, "0,1,1,0,1,1,0,1,1,0,0,0", "0", "0,0,0,0,0,0,0,0,0,0,0,0"),
    ("sd", "MIDD", 1, "0,0,0,0,0,1,0,1,1,0,0,0", "1", "0,0,0,1,1,1,1,0,0,0,0,0"),
    ("sd", "OUTD", 1, "0,0,0,0,0,0,0,0,0,0,0,0", "0", "0,0,0,1,1,1,1,0,0,0,0,0"),
    ("sd", "OUTS", 1, "0,0,0,0,0,0,0,0,0,0,0,0", "0", "0,0,0,0,0,0,0,1,1,1,1,1"),
    ("sd", "OUTALL", 1, "0,0,0,0,0,0,0,0,0,0,0,0", "0", "0,0,0,1,1,1,1,1,1,1,1,1"),
    ("sd", "ALL0.5", 0.5, "0,0.5,0.5,0,0.5,0.5,0,0.5,0.5,0,0,0", "0.5", "0,0,0,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5"),
    ("sdxl", "ALL", 1, "0,1,1,0,1,1,0,1,1", "1,1,1", "0,0,0,1,1,1,1,1,1"),
    ("sdxl", "INS", 1, "0,1,1,0,1,0,0,0,0", "0,0,0", "0,0,0,0,0,0,0,0,0"),
    ("sdxl", "IND", 1, "0,0,0,0,0,1,0,1,1", "0,0,0", "0,0,0,0,0,0,0,0,0"),
    ("sdxl", "INALL", 1, "0,1,1,0,1,1,0,1,1", "0,0,0", "0,0,0,0,0,0,0,0,0"),
    ("sdxl", "MIDD", 1, "0,0,0,0,0,1,0,1,1", "1,1,1", "0,0,0,1,1,1,1,0,0"),
    ("sdxl", "OUTD", 1, "0,0,0,0,0,0,0,0,0", "0,0,0", "0,0,0,1,1,1,1,0,0"),
    ("sdxl", "OUTS", 1, "0,0,0,0,0,0,0,0,0", "0,0,0", "0,0,0,0,0,0,0,1,1"),
    ("sdxl", "OUTALL", 1, "0,0,0,0,0,0,0,0,0", "0,0,0", "0,0,0,1,1,1,1,1,1"),
    ("sdxl", "ALL0.5", 0.5, "0,0.5,0.5,0,0.5,0.5,0,0.5,0.5", "0.5,0.5,0.5", "0,0,0,0.5,0.5,0.5,0.5,0.5,0.5"),
]
ARCH = {"sd": SD, "sdxl": SDXL}


def expected_blocks(arch, down, mid, up):
    return resolve_block_lr_weights(arch, down, mid, up, "0")


@pytest.mark.parametrize("arch_name,preset,base,down,mid,up", PRESETS)
def test_every_preset_gives_the_documented_weights(arch_name, preset, base, down, mid, up):
    arch = ARCH[arch_name]
    got_base, blocks = lbw_training_weights(arch, {"lbw_weights": preset})
    assert got_base == base
    assert blocks == expected_blocks(arch, down, mid, up)
    assert lbw_to_network_args(arch, preset) == {"down_lr_weight": down, "mid_lr_weight": mid, "up_lr_weight": up}


@pytest.mark.parametrize("arch_name", ["sd", "sdxl"])
def test_none_preset_trains_nothing_and_says_so(arch_name):
    with pytest.raises(NetworkArgError, match="lbw_weights='NONE'.*nothing in the U-Net would train"):
        lbw_training_weights(ARCH[arch_name], {"lbw_weights": "NONE"})


VECTORS = [
    # arch, vector (BASE first), BASE, down, mid, up: the vector's blocks by LBW name, unnamed ones 0.
    ("sd", "0.5,1,0.9,0.8,0.7,0.6,0.5,1,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", 0.5,
     "0,1,0.9,0,0.8,0.7,0,0.6,0.5,0,0,0", "1", "0,0,0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"),
    ("sd", "1," + ",".join(str(i / 10) for i in range(1, 13)) + ",1," + ",".join(str(i / 10) for i in range(12, 0, -1)), 1,
     ",".join(str(i / 10) for i in range(1, 13)), "1", ",".join(str(i / 10) for i in range(12, 0, -1))),
    ("sdxl", "0,1,0.9,0.8,0.7,0.5,1,0.9,0.8,0.7,0.6,0.5", 0, "0,0,0,0,1,0.9,0,0.8,0.7", "0.5,0.5,0.5", "1,0.9,0.8,0.7,0.6,0.5,0,0,0"),
    ("sdxl", "2," + ",".join(["0.5"] * 9) + ",1," + ",".join(["0.25"] * 9), 2, ",".join(["0.5"] * 9), "1,1,1", ",".join(["0.25"] * 9)),
]


@pytest.mark.parametrize("arch_name,vector,base,down,mid,up", VECTORS)
def test_every_vector_length_maps_to_down_mid_up_and_base(arch_name, vector, base, down, mid, up):
    arch = ARCH[arch_name]
    got_base, blocks = lbw_training_weights(arch, {"lbw_weights": vector})
    assert got_base == base
    assert blocks == expected_blocks(arch, down, mid, up)


@pytest.mark.parametrize(
    "arch_name,count,accepted",
    [("sd", 12, "17 or 26"), ("sd", 20, "17 or 26"), ("sdxl", 17, "12 or 20"), ("sdxl", 26, "12 or 20")],
)
def test_wrong_length_names_the_accepted_lengths(arch_name, count, accepted):
    with pytest.raises(NetworkArgError, match=accepted) as error:
        lbw_training_weights(ARCH[arch_name], {"lbw_weights": ",".join(["1"] * count)})
    assert error.value.key == "lbw_weights" and f"got {count} values" in str(error.value)


def test_mixing_with_down_mid_up_is_an_error():
    with pytest.raises(NetworkArgError, match="lbw_weights.*without down_lr_weight, mid_lr_weight"):
        lbw_training_weights(SD, {"lbw_weights": "ALL", "down_lr_weight": "sine", "mid_lr_weight": "1"})


def groups(module, **kwargs):
    te, unet = build_tiny_sd(0)
    network = module.create_network(1.0, 4, 1, None, te, unet, conv_dim="4", **kwargs)
    network.apply_to(te, unet)
    params, descriptions = network.prepare_optimizer_params(1e-4, 1e-3, 1e-2, with_descriptions=True)
    return network, dict(zip(descriptions, (g["lr"] for g in params)))


@pytest.mark.parametrize("module", [lora, dylora])
def test_trains_like_the_equivalent_lists_with_base_scaling_the_te_lr(module):
    vector = "0.5,1,0.9,0.8,0.7,0.6,0.5,1,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"
    _, ours = groups(module, lbw_weights=vector)
    _, lists = groups(module, **lbw_to_network_args(SD, vector))
    assert ours.pop("textencoder") == pytest.approx(0.5e-4)
    assert lists.pop("textencoder") == 1e-4
    assert ours == lists


def test_base_zero_gives_no_text_encoder_modules():
    network, lrs = groups(lora, lbw_weights="0," + ",".join(["1"] * 16))
    assert network.text_encoder_loras == [] and "textencoder" not in lrs


def test_unnamed_blocks_are_logged(caplog):
    caplog.set_level(logging.INFO, logger="lr_weights")
    network, _ = groups(lora, lbw_weights="ALL")
    text = caplog.text
    assert "not named by this 17-value form, so 0 as in LBW: IN03, IN06, IN09, IN10, IN11, OUT00, OUT01, OUT02" in text
    assert not {network.block_of(m) for m in network.unet_loras} & {3, 6, 9, 10, 11, 13, 14, 15}


def test_threshold_applies():
    _, blocks = lbw_training_weights(SD, {"lbw_weights": "1,1,0.2,1,1,1,1,1,1,1,1,1,1,1,1,1,1", "block_lr_zero_threshold": "0.3"})
    assert blocks[2] == 0 and blocks[1] == 1
