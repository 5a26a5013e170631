"""Block numbering against the recorded upstream figures, and architecture detection."""

import pytest
from torch import nn

from lr_weights.archs.blocks import SD, SDXL, block_index, detect_architecture

from tests.conftest import upstream_case, upstream_case_slugs
from tests.upstream_models import rebuild


@pytest.mark.parametrize("slug", [s for s in upstream_case_slugs() if "modules" in upstream_case(s)["result"]])
def test_every_recorded_module_has_upstreams_block(slug):
    case = upstream_case(slug)
    arch = SDXL if case["model"] == "sdxl" else SD
    for module in case["result"]["modules"]:
        if module["name"].startswith("lora_unet"):
            assert block_index(module["name"], arch) == module["block"], module["name"]


def test_block_names():
    assert SD.num_blocks == 25 and SDXL.num_blocks == 23
    assert [SD.block_name(i) for i in (0, 11, 12, 13, 24)] == ["IN00", "IN11", "M00", "OUT00", "OUT11"]
    assert [SDXL.block_name(i) for i in (0, 1, 9, 10, 12, 13, 21, 22)] == ["EMB", "IN00", "IN08", "M00", "M02", "OUT00", "OUT08", "FINAL"]


def test_parts_of_the_flat_list():
    assert SD.part_of(0) == ("down", 0) and SD.part_of(12) == ("mid", 0) and SD.part_of(24) == ("up", 11)
    assert SDXL.part_of(0) == ("fixed", 0) and SDXL.part_of(11) == ("mid", 1) and SDXL.part_of(22) == ("fixed", 0)


def test_detects_sdxl_without_sd_scripts():
    assert detect_architecture(rebuild("sdxl")[1]) is SDXL
    assert detect_architecture(rebuild("sd1")[1]) is SD
    assert detect_architecture(rebuild("sd2")[1]) is SD

    class LDMStyle(nn.Module):  # an SDXL U-Net of another class name (e.g. an older sd-scripts)
        def __init__(self):
            super().__init__()
            self.input_blocks, self.middle_block, self.output_blocks = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()

    assert detect_architecture(LDMStyle()) is SDXL


def test_unknown_names_have_no_block():
    assert block_index("lora_unet_conv_in", SD) == -1
    assert block_index("lora_unet_time_embed_0", SDXL) == -1
