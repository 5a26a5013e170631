"""FLUX network_args: upstream lora_flux's args keep their meaning, bad input is a NetworkArgError
naming key and value, and the block-wise args go through SD's parsing with FLUX's stacks."""

import math

import pytest

from lr_weights.archs import FLUX
from lr_weights.errors import NetworkArgError
from lr_weights.args.dit_settings import parse_block_selection
from lr_weights.flux import parse_flux_settings
from lr_weights.args.lbw import lbw_vector, parse_lbw
from lr_weights.args.settings import parse_network_settings
from lr_weights.archs.blocks import SD


def settings(**kwargs):
    return parse_flux_settings(4, 1, kwargs)


def test_presets_expand_over_19_and_38_with_upstreams_formulas():
    s = settings(double_lr_weight="sine+.25", single_lr_weight="reverse_linear")
    weights = s.options.block_lr_weights
    double = weights[1:20]
    single = weights[20:58]
    # sd-scripts: sine = sin(pi/2 * k/(n-1)) + b, reverse_linear = 1 - k/(n-1); threshold 0 drops w <= 0.
    assert double == tuple(math.sin(math.pi * (k / 18) / 2) + 0.25 for k in range(19))
    assert single == tuple(((37 - k) / 37) if k < 37 else 0.0 for k in range(38))
    assert weights[0] == 1.0 and weights[58] == 1.0


def test_one_number_and_lists_and_threshold():
    s = settings(double_lr_weight="0.5", single_lr_weight=",".join(["0.2"] * 19 + ["1"] * 19), block_lr_zero_threshold="0.2")
    weights = s.options.block_lr_weights
    assert weights[1:20] == (0.5,) * 19
    # a block AT the threshold gets weight 0 (and so no modules)
    assert weights[20:39] == (0.0,) * 19 and weights[39:58] == (1.0,) * 19


def test_threshold_that_removes_every_block_is_an_error():
    with pytest.raises(NetworkArgError, match="block_lr_zero_threshold"):
        settings(double_lr_weight="0.5", single_lr_weight="0.5", block_lr_zero_threshold="0.5")


@pytest.mark.parametrize(
    "key,value,fragment",
    [
        ("down_lr_weight", "sine", "lr_weights.lora"),
        ("mid_lr_weight", "1", "lr_weights.lora"),
        ("block_dims", "4", "lr_weights.lora"),
        ("conv_block_dims", "4", "lr_weights.lora"),
        ("double_lr_weigth", "1", "did you mean double_lr_weight"),
        ("train_double_block_indices", "0-25", "0..18"),
        ("train_single_block_indices", "x", "'x' is not"),
        ("train_double_block_indices", "5-2", "'5-2' is not"),
        ("train_blocks", "both", "all, double, single"),
        ("in_dims", "4,4,4", "5 comma-separated"),
        ("in_dims", "4,4,a,4,4", "vector entry"),
        ("network_reg_lrs", "double_blocks_(=1e-4", "valid regular expressions"),
        ("network_reg_lrs", "double=abc", "learning rate"),
        ("network_reg_dims", "double", "no '='"),
        ("network_reg_dims", "double=-1", "whole number"),
        ("img_attn_dim", "-2", "whole number"),
        ("double_block_dims", "4,4", "exactly 19"),
        ("single_block_alphas", ",".join(["1"] * 37) + ",x", "entry 37"),
        ("split_qkv", "maybe", "True or False"),
        ("ggpo_beta", "0.01", "ggpo_sigma"),
        ("double_lr_weight", "sine+", "offset"),
        ("lbw_weights", ",".join(["1"] * 17), "58 or 61"),
    ],
)
def test_bad_input_names_key_and_value(key, value, fragment):
    with pytest.raises(NetworkArgError) as error:
        settings(**{key: value})
    assert error.value.key == key
    assert fragment in str(error.value), str(error.value)


def test_flux_args_are_errors_for_the_sd_module():
    for key in ("double_lr_weight", "single_block_dims", "split_qkv", "network_reg_lrs", "train_t5xxl"):
        with pytest.raises(NetworkArgError, match="lr_weights.flux") as error:
            parse_network_settings(SD, 4, 1, {key: "1"})
        assert error.value.key == key


def test_block_selection_is_upstreams():
    assert parse_block_selection("k", "all", 4) == (True,) * 4
    assert parse_block_selection("k", "none", 4) == (False,) * 4
    assert parse_block_selection("k", "", 4) == (False,) * 4
    assert parse_block_selection("k", "0, 2-3", 5) == (True, False, True, True, False)


def test_flags_and_in_dims_and_regexes():
    s = settings(split_qkv="True", train_t5xxl="true", in_dims="[4,0,2,0,8]", network_reg_lrs="a=1e-4, b.*=2e-5", network_reg_dims="c=8")
    assert s.split_qkv and s.train_t5xxl and not s.verbose
    assert s.in_dims == (4, 0, 2, 0, 8)
    assert s.reg_lrs == (("a", 1e-4), ("b.*", 2e-5)) and s.reg_dims == (("c", 8),)


def test_block_dims_fill_their_stack():
    s = settings(double_block_dims=",".join(str(i) for i in range(19)), single_block_alphas=",".join(["2"] * 38))
    assert s.block_dims[1:20] == tuple(range(19)) and s.block_dims[0] == 4 and s.block_dims[20:] == (4,) * 39
    assert s.block_alphas[20:58] == (2.0,) * 38 and s.block_alphas[1] == 1.0


def test_lbw_61_values_clip_t5_in_and_blocks():
    values = ["0.5", "0.25", "0"] + [str(i / 100) for i in range(1, 20)] + ["1"] * 38 + ["0.7"]
    s = settings(lbw_weights=",".join(values))
    assert s.text_encoder_weight("TE1") == 0.5 and s.text_encoder_weight("TE3") == 0.25
    weights = s.options.block_lr_weights
    assert weights[0] == 0.0  # IN
    assert weights[1:20] == tuple(i / 100 for i in range(1, 20))
    assert weights[20:58] == (1.0,) * 38 and weights[58] == 0.7


def test_lbw_58_value_inspire_form_base_covers_encoders_and_in():
    s = settings(lbw_weights=",".join(["0.5"] + ["1"] * 19 + ["0"] * 37 + ["2"]))
    assert s.text_encoder_weight("TE1") == 0.5 == s.text_encoder_weight("TE3") and s.options.block_lr_weights[0] == 0.5
    assert s.options.block_lr_weights[20:58] == (0.0,) * 37 + (2.0,)


def test_lbw_flux_preset_and_round_trip():
    weights = parse_lbw(FLUX, "fluxall")
    assert weights.blocks == (1.0,) * 59 and weights.text_encoders == (("TE1", 1.0), ("TE3", 1.0))
    text = ",".join(str(v) for v in [0.5, 0.25] + [0.125] + [1] * 57 + [0])
    parsed = parse_lbw(FLUX, text)
    assert lbw_vector(FLUX, parsed.blocks, text_encoders=dict(parsed.text_encoders)) == text
    with pytest.raises(ValueError, match="BASE"):
        lbw_vector(FLUX, parsed.blocks, text_encoders=dict(parsed.text_encoders), length=58)


def test_lbw_and_stack_lists_do_not_mix():
    with pytest.raises(NetworkArgError, match="without double_lr_weight"):
        settings(lbw_weights="FLUXALL", double_lr_weight="1")
