"""--suggest: blocks under the cut-off as an LBW vector and network_args that lr_weights' own parsers
read back as exactly the kept/dropped blocks."""

import pytest

from lr_weights.analysis.measure import BlockEffect, FileEffect
from lr_weights.analysis.suggest import parse_cutoff, suggest
from lr_weights.args.lbw import parse_lbw
from lr_weights.args.weights import parse_float_list
from lr_weights.archs import FLUX, SD, SDXL
from lr_weights.errors import NetworkArgError


def effect(arch, shares, text_encoders=()):
    rows = [BlockEffect(label, None, 1, share, share, share, 1.0) for label, share in text_encoders]
    rows += [BlockEffect(name, arch.block_index_of(name), 1, share, share, share, 1.0) for name, share in shares.items()]
    return FileEffect("f.safetensors", arch.name, "LoRA", 0.1, tuple(rows))


def test_sd_short_form_and_stack_args():
    shares = {"IN01": 0.3, "IN02": 0.01, "M00": 0.2, "OUT11": 0.49}
    result = suggest(effect(SD, shares), SD, 0.02)
    assert result.dropped == ("IN02",) and result.kept == ("IN01", "M00", "OUT11")
    assert len(result.lbw.split(",")) == 17  # the blocks the 17 form leaves out are 0 anyway
    weights = parse_lbw(SD, result.lbw)
    assert [weights.blocks[SD.block_index_of(b)] for b in ("IN01", "IN02", "M00", "OUT11", "OUT10")] == [1, 0, 1, 1, 0]
    assert weights.base == 1.0  # text encoder not measured: unchanged
    args = dict(result.network_args)
    assert parse_float_list("down_lr_weight", args["down_lr_weight"])[1:3] == [1.0, 0.0]
    assert args["mid_lr_weight"] == "1" and args["block_lr_zero_threshold"] == "0"


def test_sd_full_form_when_a_left_out_block_matters():
    result = suggest(effect(SD, {"IN03": 0.5, "OUT11": 0.5}), SD, 0.02)
    assert len(result.lbw.split(",")) == 26
    assert parse_lbw(SD, result.lbw).blocks[SD.block_index_of("IN03")] == 1.0


def test_sdxl_middle_blocks_share_lbw_m00():
    # LBW has one M00 for SDXL's three middle blocks: kept if any is; the training args keep them apart.
    shares = {"IN04": 0.4, "M00": 0.001, "M01": 0.5, "M02": 0.099}
    result = suggest(effect(SDXL, shares), SDXL, 0.1)
    weights = parse_lbw(SDXL, result.lbw)
    assert [weights.blocks[SDXL.block_index_of(m)] for m in ("M00", "M01", "M02")] == [1, 1, 1]
    assert dict(result.network_args)["mid_lr_weight"] == "0,1,0"
    assert weights.blocks[SDXL.block_index_of("EMB")] == 1.0  # never holds a module: LBW's neutral 1


def test_flux_text_encoders_and_in():
    shares = {"IN": 0.01, "D00": 0.5, "S05": 0.39}
    result = suggest(effect(FLUX, shares, text_encoders=[("TE1", 0.1), ("TE3", 0.0)]), FLUX, 0.05)
    weights = parse_lbw(FLUX, result.lbw)
    assert dict(weights.text_encoders) == {"TE1": 1.0, "TE3": 0.0} and result.text_encoders_dropped
    assert weights.blocks[FLUX.block_index_of("IN")] == 0.0 and weights.blocks[FLUX.block_index_of("D00")] == 1.0
    assert set(dict(result.network_args)) == {"double_lr_weight", "single_lr_weight", "block_lr_zero_threshold"}


@pytest.mark.parametrize("text", ["1", "-0.1", "x", "nan"])
def test_bad_cutoff(text):
    with pytest.raises(NetworkArgError, match="--suggest"):
        parse_cutoff(text)
