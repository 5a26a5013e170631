"""LBW vectors <-> per-block weights <-> down/mid/up network_args."""

import pytest

from lr_weights.archs.blocks import SD, SDXL
from lr_weights.errors import NetworkArgError
from lr_weights.args.lbw import (
    LBW_PRESETS,
    block_weights_to_network_args,
    format_number,
    lbw_to_network_args,
    lbw_vector,
    parse_lbw,
)
from lr_weights.args.settings import trainable_block_lr_weights
from lr_weights.args.weights import resolve_block_lr_weights


def by_name(arch, weights):
    return {arch.block_name(i): w for i, w in enumerate(weights.blocks)}


def test_sd_26_maps_one_to_one():
    values = [i / 100 for i in range(26)]
    weights = parse_lbw(SD, ",".join(str(v) for v in values))
    assert weights.base == 0.0
    assert list(weights.blocks) == values[1:]


def test_sd_17_gives_unnamed_blocks_zero():
    weights = parse_lbw(SD, "0.5," + ",".join(["1"] * 16))
    named = by_name(SD, weights)
    assert weights.base == 0.5
    for name in ("IN00", "IN03", "IN06", "IN09", "IN10", "IN11", "OUT00", "OUT01", "OUT02"):
        assert named[name] == 0.0
    for name in ("IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00", "OUT03", "OUT11"):
        assert named[name] == 1.0


def test_sdxl_12_and_20():
    weights = parse_lbw(SDXL, "1,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.1,1.2")
    named = by_name(SDXL, weights)
    assert (named["IN04"], named["IN05"], named["IN07"], named["IN08"]) == (0.1, 0.2, 0.3, 0.4)
    # LBW's one M00 covers sd-scripts' three middle blocks.
    assert (named["M00"], named["M01"], named["M02"]) == (0.5, 0.5, 0.5)
    assert [named[f"OUT{i:02d}"] for i in range(9)] == [0.6, 0.7, 0.8, 0.9, 1.1, 1.2, 0, 0, 0]
    assert named["IN00"] == named["IN06"] == 0.0
    assert named["EMB"] == named["FINAL"] == 1.0  # never a module; sd-scripts' list keeps 1.0 there

    full = parse_lbw(SDXL, ",".join(str(i) for i in range(20)))
    assert by_name(SDXL, full)["IN00"] == 1 and by_name(SDXL, full)["M02"] == 10 and by_name(SDXL, full)["OUT08"] == 19


def test_presets_have_lbw_values():
    assert set(LBW_PRESETS) == {"NONE", "ALL", "INS", "IND", "INALL", "MIDD", "OUTD", "OUTS", "OUTALL", "ALL0.5"}
    assert all(len(v.split(",")) == 17 for v in LBW_PRESETS.values())
    outd = by_name(SD, parse_lbw(SD, "OUTD"))
    assert [outd[n] for n in ("OUT03", "OUT04", "OUT05", "OUT06", "OUT07")] == [1, 1, 1, 1, 0]
    assert parse_lbw(SD, "outall").base == 1.0  # case-insensitive
    half = parse_lbw(SD, "ALL0.5")
    assert half.base == 0.5 and by_name(SD, half)["M00"] == 0.5


def test_preset_on_sdxl_applies_by_name():
    weights = by_name(SDXL, parse_lbw(SDXL, "OUTALL"))
    # The 17 layout names OUT03..OUT11; SDXL has OUT00..OUT08.
    assert [weights[f"OUT{i:02d}"] for i in range(9)] == [0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert weights["M00"] == 0


@pytest.mark.parametrize(
    "arch, text, fragment",
    [
        (SD, "1,1,1", "17 or 26"),
        (SD, ",".join(["1"] * 20), "SDXL layout"),
        (SDXL, ",".join(["1"] * 17), "12 or 20"),
        (SD, "BOGUS", "NONE, ALL"),
        (SD, "1," * 16 + "R", "random"),
        (SD, "1," * 16 + "x", "entry 17"),
        (SD, "1," * 16 + "nan", "finite"),
    ],
)
def test_bad_input_names_the_accepted_forms(arch, text, fragment):
    with pytest.raises(NetworkArgError) as info:
        parse_lbw(arch, text)
    assert "lbw_weights" in str(info.value)
    assert fragment in str(info.value)


def test_vector_round_trip():
    text = ",".join(format_number(v) for v in [1.0] + [i / 8 for i in range(25)])
    assert lbw_vector(SD, parse_lbw(SD, text).blocks, base=1.0) == text
    xl = "1,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.1,1.2"
    assert lbw_vector(SDXL, parse_lbw(SDXL, xl).blocks, base=1, length=12) == xl
    assert lbw_vector(SD, parse_lbw(SD, "OUTD").blocks, length=17) == LBW_PRESETS["OUTD"]


def test_vector_refuses_differing_sdxl_middle_blocks():
    weights = list(parse_lbw(SDXL, ",".join(["1"] * 20)).blocks)
    weights[SDXL.mid_start + 1] = 0.5
    with pytest.raises(ValueError, match="M01=0.5"):
        lbw_vector(SDXL, weights)


def test_network_args_reproduce_the_weights():
    for arch, text in ((SD, "MIDD"), (SD, ",".join(str(i / 10) for i in range(26))), (SDXL, "1,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.1,1.2")):
        weights = parse_lbw(arch, text)
        args = lbw_to_network_args(arch, text)
        assert len(args["down_lr_weight"].split(",")) == arch.num_down
        assert len(args["mid_lr_weight"].split(",")) == arch.num_mid
        resolved = resolve_block_lr_weights(arch, args["down_lr_weight"], args["mid_lr_weight"], args["up_lr_weight"])
        assert resolved == weights.blocks


def test_network_args_pass_the_module_validation():
    args = block_weights_to_network_args(SD, parse_lbw(SD, "OUTS").blocks)
    flat = trainable_block_lr_weights(SD, args)
    assert [SD.block_name(i) for i, w in enumerate(flat) if w > 0 and i != 0] == ["OUT07", "OUT08", "OUT09", "OUT10", "OUT11"]
    with pytest.raises(NetworkArgError, match="nothing in the U-Net"):
        trainable_block_lr_weights(SD, block_weights_to_network_args(SD, parse_lbw(SD, "NONE").blocks))


def test_format_number_is_exact_and_short():
    assert [format_number(v) for v in (1.0, 0.0, -0.0, 0.5, 2, 1 / 3)] == ["1", "0", "0", "0.5", "2", repr(1 / 3)]
