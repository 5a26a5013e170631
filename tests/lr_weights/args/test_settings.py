"""network_args validation: every bad input is a NetworkArgError naming the key and the value,
and the deviations of CONTRACT §7 hold."""

import logging

import pytest

from lr_weights import lora
from lr_weights.archs.blocks import SD, SDXL
from lr_weights.errors import NetworkArgError
from lr_weights.args.settings import parse_network_settings

from tests.upstream_models import rebuild

N25 = ",".join(["4"] * 25)


def settings(**kwargs):
    return parse_network_settings(SD, 4, 1.0, kwargs)


@pytest.mark.parametrize(
    "key, value",
    [
        ("conv_dim", "four"),
        ("conv_dim", "-1"),
        ("conv_dim", "2.5"),
        ("conv_alpha", "nan"),
        ("conv_alpha", "-1"),
        ("block_dims", "4,4,4"),
        ("block_dims", N25.replace("4", "-4", 1)),
        ("block_dims", N25.replace("4", "x", 1)),
        ("block_alphas", "1,1"),
        ("conv_block_dims", "1," * 24 + "y"),
        ("rank_dropout", "1.5"),
        ("module_dropout", "-0.1"),
        ("dropout", "abc"),
        ("loraplus_lr_ratio", "0"),
        ("loraplus_unet_lr_ratio", "inf"),
        ("block_lr_zero_threshold", "nan"),
        ("mid_lr_weight", "sine"),
        ("up_lr_weight", "1,,nan"),
        ("down_lr_weight", "sine+"),
    ],
)
def test_bad_values_name_key_and_value(key, value):
    with pytest.raises(NetworkArgError) as raised:
        settings(**{key: value})
    assert raised.value.key == key
    assert key in str(raised.value) and repr(value) in str(raised.value)


@pytest.mark.parametrize("dim, key", [("0", "network_dim"), ("x", "network_dim")])
def test_bad_network_dim(dim, key):
    with pytest.raises(NetworkArgError, match=key):
        parse_network_settings(SD, dim, 1.0, {})


def test_sd1_length_lists_on_sdxl_name_the_expected_length():
    with pytest.raises(NetworkArgError, match="exactly 23"):
        parse_network_settings(SDXL, 4, 1, {"block_dims": N25})


def test_threshold_that_removes_every_block_explains_itself():
    # CONTRACT §7.12: upstream silently trains nothing in the U-Net.
    with pytest.raises(NetworkArgError) as raised:
        settings(down_lr_weight="0.5", mid_lr_weight="0.5", up_lr_weight="0.5", block_lr_zero_threshold="0.5")
    assert raised.value.key == "block_lr_zero_threshold"
    assert "not weight x learning rate" in str(raised.value)


def test_negative_weight_let_through_by_the_threshold_is_refused():
    with pytest.raises(NetworkArgError, match="negative learning rate") as raised:
        settings(down_lr_weight="1,-1", block_lr_zero_threshold="-2")
    assert raised.value.key == "down_lr_weight"


def test_lone_block_alphas_is_honoured():
    # CONTRACT §7.5: upstream ignores block_alphas unless block_dims or LR weights are given.
    alphas = ",".join(str(i) for i in range(25))
    resolved = settings(block_alphas=alphas)
    assert resolved.block_alphas == tuple(float(i) for i in range(25))
    assert resolved.options.block_lr_weights is None  # no block LR: one "unet" group as upstream


def test_lone_conv_block_dims_enables_locon_per_block():
    dims = ",".join(["0"] * 12 + ["8"] + ["0"] * 12)
    resolved = settings(conv_block_dims=dims)
    assert resolved.trains_conv and resolved.conv_block_dims[12] == 8 and resolved.conv_block_alphas == (1.0,) * 25


def test_conv_block_alphas_without_conv_dims_is_an_error():
    with pytest.raises(NetworkArgError, match="conv_block_alphas"):
        settings(conv_block_alphas=",".join(["1"] * 25))


def test_gui_era_aliases_are_accepted_with_a_warning(caplog):
    dims = ",".join(["2"] * 25)
    with caplog.at_level(logging.WARNING):
        resolved = settings(conv_dim="8", conv_dims=dims, conv_alphas=",".join(["1"] * 25))
    assert resolved.conv_block_dims == (2,) * 25
    assert "conv_dims" in caplog.text and "conv_block_dims" in caplog.text


def test_typo_of_a_known_key_is_an_error():
    with pytest.raises(NetworkArgError, match="did you mean down_lr_weight") as error:
        settings(down_lr_weigth="sine")
    assert str(error.value).endswith("did you mean down_lr_weight?")  # no stray "?."


@pytest.mark.parametrize("key, meant", [("Down_LR_Weight", "down_lr_weight"), ("MID_LR_WEIGHT", "mid_lr_weight"), ("Conv_Dim", "conv_dim"), ("block-dims", "block_dims")])
def test_other_case_of_a_known_key_is_an_error(key, meant):
    # sd-scripts reads keys case-sensitively: Down_LR_Weight would silently train with no block LRs.
    with pytest.raises(NetworkArgError, match=f"did you mean {meant}\\?") as error:
        settings(**{key: "1"})
    assert error.value.key == key


def test_gui_alias_errors_name_the_alias_given():
    with pytest.raises(NetworkArgError) as error:
        settings(conv_dims="4")
    assert error.value.key == "conv_dims"
    with pytest.raises(NetworkArgError) as error:
        settings(conv_dim="4", conv_alphas="1,2")
    assert error.value.key == "conv_alphas"


def test_unrelated_unknown_key_only_warns(caplog):
    with caplog.at_level(logging.WARNING):
        settings(algo="lora")
    assert "algo" in caplog.text


def test_zero_weight_blocks_get_dim_zero_for_linear_and_conv():
    resolved = settings(down_lr_weight="0,1,0,1,1,1,1,1,1,1,1,1", conv_dim="4")
    assert resolved.block_dims[2] == 0 and resolved.conv_block_dims[2] == 0
    assert resolved.block_dims[1] == 4 and resolved.conv_block_dims[1] == 4


def test_injected_dropout_is_used_when_neuron_dropout_is_absent():
    resolved = parse_network_settings(SD, 4, 1, {"dropout": 0.1}, neuron_dropout=None)
    assert resolved.options.dropout == 0.1
    resolved = parse_network_settings(SD, 4, 1, {"dropout": None}, neuron_dropout=0.2)
    assert resolved.options.dropout == 0.2


def test_dim_larger_than_the_layer_allows():
    te, unet = rebuild("sd1")
    with pytest.raises(NetworkArgError) as raised:
        lora.create_network(1.0, 1024, 1, None, te, unet)
    assert raised.value.key == "network_dim" and "768" in str(raised.value)


def test_no_shared_state_between_networks():
    # CONTRACT §7.6: upstream's class-level target list makes every later network LoCon.
    te, unet = rebuild("sd1")
    with_conv = lora.create_network(1.0, 4, 1, None, te, unet, conv_dim="4")
    without = lora.create_network(1.0, 4, 1, None, te, unet)
    assert len(with_conv.unet_loras) == 278 and len(without.unet_loras) == 192
