"""Architectures as data: every family's blocks, stacks, LBW vocabulary and name locator agree."""

import pytest

from lr_weights.archs import ARCHITECTURES, FLUX, SD, SDXL, get_architecture, keys_of_other_architectures
from lr_weights.errors import NetworkArgError


@pytest.mark.parametrize("arch", list(ARCHITECTURES.values()), ids=list(ARCHITECTURES))
def test_stacks_tile_the_flat_list_without_overlap(arch):
    covered = [i for stack in arch.stacks for i in range(stack.start, stack.stop)]
    assert len(covered) == len(set(covered))
    assert all(0 <= i < arch.num_blocks for i in covered)
    # Blocks outside every stack are upstream's fixed entries (SDXL EMB/FINAL, FLUX and Anima IN/OUT).
    outside = sorted(set(range(arch.num_blocks)) - set(covered))
    assert {"sd": [], "sdxl": [0, 22], "flux": [0, 58], "sd3": [0, 25], "sd3-large": [0, 39], "lumina": [0, 31], "anima": [0, 35], "hunyuan_image": []}[arch.name] == outside


@pytest.mark.parametrize("arch", list(ARCHITECTURES.values()), ids=list(ARCHITECTURES))
def test_lbw_forms_name_known_blocks_and_encoders(arch):
    labels = set(arch.lbw.text_encoder_labels)
    for form in arch.lbw.forms:
        for entry in form:
            for target in arch.lbw.targets(entry):
                assert target in arch.block_names or target in labels, (arch.name, entry, target)
    assert len(set(arch.lbw.lengths)) == len(arch.lbw.lengths)


def test_block_counts_and_names():
    assert (SD.num_blocks, SDXL.num_blocks, FLUX.num_blocks) == (25, 23, 59)
    assert [s.size for s in SD.stacks] == [12, 1, 12] and [s.size for s in SDXL.stacks] == [9, 3, 9]
    assert [(s.lr_weight_key, s.size) for s in FLUX.stacks] == [("double_lr_weight", 19), ("single_lr_weight", 38)]
    assert FLUX.block_names[:3] == ("IN", "D00", "D01") and FLUX.block_names[-2:] == ("S37", "OUT")
    assert FLUX.lbw.lengths == (58, 61)


@pytest.mark.parametrize(
    "name,index",
    [
        ("lora_unet_double_blocks_0_img_attn_qkv", 1),
        ("lora_unet_double_blocks_18_txt_mlp_2", 19),
        ("lora_unet_single_blocks_0_linear1", 20),
        ("lora_unet_single_blocks_37_modulation_lin", 57),
        ("lora_unet_img_in", 0),
        ("lora_unet_time_in_in_layer", 0),
        ("lora_unet_guidance_in_out_layer", 0),
        ("lora_unet_final_layer_linear", 58),
        ("lora_unet_double_blocks_19_img_attn_qkv", -1),
        ("lora_te1_text_model_encoder_layers_0_mlp_fc1", -1),
    ],
)
def test_flux_locator_matches_upstream_numbering(name, index):
    # Upstream reads the block number as the fifth `_` field; the flat index adds the stack start.
    assert FLUX.locate(name) == index


def test_get_architecture_names_the_choices():
    assert get_architecture("sd2") is SD and get_architecture("FLUX") is FLUX
    assert get_architecture("sd3.5").name == "sd3" and get_architecture("Lumina2").name == "lumina"
    assert get_architecture("sd3.5-large").name == "sd3-large"
    with pytest.raises(NetworkArgError, match="sd, sdxl, flux, sd3, sd3-large, lumina"):
        get_architecture("hunyuan")


def test_each_family_refuses_the_others_args():
    assert keys_of_other_architectures(SD)["double_lr_weight"] is FLUX
    assert keys_of_other_architectures(FLUX)["down_lr_weight"] is SD
    assert "block_lr_zero_threshold" not in keys_of_other_architectures(FLUX)
