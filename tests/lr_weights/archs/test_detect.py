"""One detection module (archs/detect.py) over the signatures each family declares, and the
DiT kind's layout data checked for consistency with its architecture."""

import os

import pytest

from lr_weights.archs import ARCHITECTURES, FLUX, SD, SDXL, architecture_names, get_architecture
from lr_weights.archs.detect import (
    architecture_from_module,
    architecture_of_model,
    model_from_checkpoint_keys,
    model_from_diffusers_folder,
    model_from_lora_names,
    model_names,
    models_of_architecture,
)
from lr_weights.archs.dit import SplitRule

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "lr_weights", "models", "data")


def test_every_model_has_its_skeletons_and_one_architecture():
    assert model_names()[:4] == ("sd1", "sd2", "sdxl", "flux")  # new families come after
    for name in model_names():
        arch = architecture_of_model(name)
        assert name in [m.name for m in arch.models]
        for skeleton in next(m for m in arch.models if m.name == name).skeletons:
            assert os.path.isfile(os.path.join(DATA, f"{skeleton}.json")), skeleton


def test_cli_names_come_from_the_registry():
    names = architecture_names()
    assert set(ARCHITECTURES) <= set(names)
    assert all(get_architecture(name) in ARCHITECTURES.values() for name in names)
    assert get_architecture("chroma") is FLUX and get_architecture("sd2") is SD


@pytest.mark.parametrize(
    "keys,model",
    [
        (["model.diffusion_model.double_blocks.0.img_attn.qkv.weight"], "flux"),
        (["double_blocks.0.img_attn.qkv.weight"], "flux"),
        (["conditioner.embedders.1.model.x", "model.diffusion_model.input_blocks.0.0.weight"], "sdxl"),
        (["model.diffusion_model.input_blocks.0.0.weight", "cond_stage_model.model.x"], "sd2"),
        (["model.diffusion_model.input_blocks.0.0.weight", "cond_stage_model.transformer.x"], "sd1"),
    ],
)
def test_checkpoint_keys(keys, model):
    assert model_from_checkpoint_keys(keys, "ckpt") == model


def test_checkpoint_of_no_known_model_is_an_error_naming_the_source():
    with pytest.raises(ValueError, match="vae.safetensors"):
        model_from_checkpoint_keys(["encoder.conv_in.weight"], "vae.safetensors")


def test_diffusers_folders():
    assert model_from_diffusers_folder(lambda f: f == "text_encoder_2", {"cross_attention_dim": 2048}) == "sdxl"
    assert model_from_diffusers_folder(lambda f: False, {"cross_attention_dim": 1024}) == "sd2"
    assert model_from_diffusers_folder(lambda f: False, {"cross_attention_dim": 768}) == "sd1"


@pytest.mark.parametrize(
    "names,shape,model",
    [
        (["lora_unet_double_blocks_0_img_attn_qkv", "lora_te1_text_model_encoder_layers_0_mlp_fc1"], None, "flux"),
        (["transformer.single_transformer_blocks.3.proj_out"], None, "flux"),
        (["lora_te1_text_model_encoder_layers_0_mlp_fc1"], None, "sdxl"),
        (["lora_unet_input_blocks_4_1_proj_in"], None, "sdxl"),
        (["lora_te_text_model_encoder_layers_22_mlp_fc1"], None, "sd2"),
        (["lora_te_text_model_encoder_layers_11_mlp_fc1"], None, "sd1"),
        (["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"], (4, 1024), "sd2"),
        (["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"], (4, 768), "sd1"),
    ],
)
def test_lora_names(names, shape, model):
    assert model_from_lora_names(names, None if shape is None else (lambda name: shape)) == model


def test_models_of_an_architecture_put_the_detected_one_first():
    assert models_of_architecture(SD, first="sd2") == ["sd2", "sd1"]
    assert models_of_architecture(SD) == ["sd1", "sd2"]


def test_modules_are_told_by_class_name_or_ldm_structure():
    assert architecture_from_module(["SdxlUNet2DConditionModel", "Module"], lambda a: False) is SDXL
    assert architecture_from_module(["UNet2DConditionModel"], lambda a: a in ("input_blocks", "middle_block", "output_blocks")) is SDXL
    assert architecture_from_module(["UNet2DConditionModel"], lambda a: a == "input_blocks") is SD


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES.values() if a.kind == "dit"], ids=lambda a: a.name)
def test_dit_layout_fits_its_architecture(arch):
    layout = arch.dit
    assert layout.all_block_classes == arch.unet_target_classes
    assert all(set(classes) <= set(layout.all_block_classes) for _, classes in layout.train_blocks)
    assert all(arch.stack(stack_name) for _, stack_name in layout.block_selections)
    assert arch.block_index_of(layout.in_block) >= 0
    assert set(layout.keys) <= set(arch.own_keys)
    assert tuple((f"{e.prefix}_", e.label) for e in layout.text_encoders) == arch.text_encoder_prefixes
    assert all(rule.form in ("equal", "qkv+rest") for rule in layout.split_rules)
    assert arch.encoder_prefixes(len(layout.text_encoders)) == tuple(e.prefix for e in layout.text_encoders)


def test_flux_split_rules_are_upstreams_name_tests():
    layout = FLUX.dit
    assert layout.split_rule("lora_unet_double_blocks_3_img_attn_qkv") == SplitRule(("double", "qkv"), "equal", 3)
    assert layout.split_rule("lora_unet_single_blocks_0_linear1").form == "qkv+rest"
    assert layout.split_rule("lora_unet_double_blocks_3_img_attn_proj") is None


def test_unet_kind_encoder_prefixes_are_lora_pys():
    assert SD.encoder_prefixes(1) == ("lora_te",) and SDXL.encoder_prefixes(2) == ("lora_te1", "lora_te2")
    assert SD.kind == SDXL.kind == "unet" and FLUX.kind == "dit"
