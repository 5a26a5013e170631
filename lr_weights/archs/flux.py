"""FLUX.1 (dev, schnell) and Chroma: sd-scripts' `networks/lora_flux.py` layout.

59 blocks: IN (the in_dims layers img_in, time_in, vector_in, guidance_in, txt_in), D00..D18
(`double_blocks.N`, DoubleStreamBlock), S00..S37 (`single_blocks.N`, SingleStreamBlock) and OUT
(final_layer, which lora_flux never adapts). Block names and order are LBW's FLUX vocabulary
(hako-mikan/sd-webui-lora-block-weight BLOCKIDFLUX: CLIP, T5, IN, D00..D18, S00..S37, OUT), so the
61-value LBW vector is CLIP, T5 and then one value per block here.
"""

from __future__ import annotations

import re

from lr_weights.archs.base import Architecture, LBWVocabulary, Stack, stack_keys
from lr_weights.archs.dit import DiTLayout, SplitRule, TextEncoder
from lr_weights.archs.sd import CLIP_ATTENTION
from lr_weights.archs.signatures import ModelSignature, Signature

NUM_DOUBLE = 19
NUM_SINGLE = 38
DOUBLE_NAMES = tuple(f"D{i:02d}" for i in range(NUM_DOUBLE))
SINGLE_NAMES = tuple(f"S{i:02d}" for i in range(NUM_SINGLE))
NAMES = ("IN",) + DOUBLE_NAMES + SINGLE_NAMES + ("OUT",)
IN_BLOCK = 0
OUT_BLOCK = len(NAMES) - 1

# LBW (scripts/lora_block_weight.py, BLOCKIDFLUX, 61 values) and ComfyUI Inspire pack's FLUX form
# (inspire/lora_block_weight.py: BASE, then one value per double and single block; BASE scales
# everything else: the text encoders and the in/out layers).
LBW_FLUX = ("CLIP", "T5") + NAMES
INSPIRE_FLUX = ("BASE",) + DOUBLE_NAMES + SINGLE_NAMES
# LBW's FLUX preset (DEF_WEIGHT_PRESET: FLUXALL = 61 ones); its SD presets are 17-value vectors that
# LBW cannot apply to FLUX.
LBW_PRESETS = (("FLUXALL", ",".join(["1"] * len(LBW_FLUX))),)

_DOUBLE = re.compile(r"^lora_unet_double_blocks_(\d+)_")
_SINGLE = re.compile(r"^lora_unet_single_blocks_(\d+)_")
# in_dims filters of lora_flux (substring matches over the whole model).
IN_FILTERS = ("_img_in", "_time_in", "_vector_in", "_guidance_in", "_txt_in")
_IN = re.compile(r"^lora_unet_(img_in|time_in|vector_in|guidance_in|txt_in)(_|$)")
_OUT = re.compile(r"^lora_unet_final_layer(_|$)")


# diffusers / ai-toolkit names of the same layers (FluxTransformer2DModel), as shared LoRA files use them.
_DIFFUSERS_DOUBLE = re.compile(r"^transformer\.transformer_blocks\.(\d+)\.")
_DIFFUSERS_SINGLE = re.compile(r"^transformer\.single_transformer_blocks\.(\d+)\.")
_DIFFUSERS_IN = re.compile(r"^transformer\.(x_embedder|context_embedder|time_text_embed)\b")
_DIFFUSERS_OUT = re.compile(r"^transformer\.(norm_out|proj_out)\b")


def locate(lora_name: str) -> int:
    """`lora_unet_double_blocks_3_img_attn_qkv` -> 4 (D03); upstream reads the same number from
    the fifth `_` field of the name. diffusers names (`transformer.transformer_blocks.3.attn.to_q`)
    map to the same blocks."""
    for pattern, start, size in (
        (_DOUBLE, 1, NUM_DOUBLE),
        (_SINGLE, 1 + NUM_DOUBLE, NUM_SINGLE),
        (_DIFFUSERS_DOUBLE, 1, NUM_DOUBLE),
        (_DIFFUSERS_SINGLE, 1 + NUM_DOUBLE, NUM_SINGLE),
    ):
        match = pattern.match(lora_name)
        if match is not None:
            number = int(match.group(1))
            return start + number if number < size else -1
    if _IN.match(lora_name) or _DIFFUSERS_IN.match(lora_name):
        return IN_BLOCK
    if _OUT.match(lora_name) or _DIFFUSERS_OUT.match(lora_name):
        return OUT_BLOCK
    return -1


# What lora_flux reads off the model (archs/dit.py says what each field means).
TEXT_ENCODERS = (
    TextEncoder("lora_te1", "TE1", "CLIP-L"),
    TextEncoder("lora_te3", "TE3", "T5XXL", trained_by="train_t5xxl"),  # ComfyUI's names
)
LAYOUT = DiTLayout(
    train_blocks=(
        ("all", ("DoubleStreamBlock", "SingleStreamBlock")),
        ("double", ("DoubleStreamBlock",)),
        ("single", ("SingleStreamBlock",)),
    ),
    # upstream's type_dims, in its order of precedence (the first that matches a name wins)
    component_dims=(
        ("img_attn_dim", ("img_attn",)),
        ("txt_attn_dim", ("txt_attn",)),
        ("img_mlp_dim", ("img_mlp",)),
        ("txt_mlp_dim", ("txt_mlp",)),
        ("img_mod_dim", ("img_mod",)),
        ("txt_mod_dim", ("txt_mod",)),
        ("single_dim", ("single_blocks", "linear")),
        ("single_mod_dim", ("modulation",)),
    ),
    in_dims_key="in_dims",
    in_layers=tuple(zip(("img", "time", "vector", "guidance", "txt"), IN_FILTERS)),
    block_selections=(("train_double_block_indices", "double"), ("train_single_block_indices", "single")),
    # double blocks' img/txt_attn.qkv: q, k, v; single blocks' linear1: q, k, v and the MLP input
    split_rules=(SplitRule(("double", "qkv"), "equal", 3), SplitRule(("single", "linear1"), "qkv+rest")),
    text_encoders=TEXT_ENCODERS,
    no_effect_keys=("conv_dim", "conv_alpha"),
    no_effect_reason="FLUX has no k x k convs (upstream lora_flux reads it and ignores it too)",
    upstream_keys=("split_qkv", "network_reg_dims", "network_reg_lrs", "ggpo_beta", "ggpo_sigma", "verbose"),
    norm_hooks=True,  # lora_flux's LoRANetwork has update_grad_norms & co.
)
STACKS = (
    Stack("double", "double_lr_weight", 1, NUM_DOUBLE, dims_key="double_block_dims", alphas_key="double_block_alphas"),
    Stack("single", "single_lr_weight", 1 + NUM_DOUBLE, NUM_SINGLE, dims_key="single_block_dims", alphas_key="single_block_alphas"),
)
FLUX_KEYS = stack_keys(STACKS) + LAYOUT.keys

# FLUX.1-dev with CLIP-L and T5-XXL as flux_utils builds them. Its LoRA files may have CLIP-L
# modules under SDXL's `lora_te1_`, so it ranks above SDXL.
MODEL = ModelSignature(
    "flux",
    ("flux_te1", "flux_te3", "flux_dev"),
    checkpoint=Signature(prefixes=("double_blocks.", "model.diffusion_model.double_blocks.")),
    lora=Signature(
        prefixes=("lora_unet_double_blocks_", "lora_unet_single_blocks_", "lora_te3_", "transformer.transformer_blocks.", "transformer.single_transformer_blocks.")
    ),
    rank=30,
)

FLUX = Architecture(
    name="flux",
    title="FLUX.1",
    block_names=NAMES,
    stacks=STACKS,
    moduleless=(OUT_BLOCK,),
    lbw=LBWVocabulary(
        forms=(INSPIRE_FLUX, LBW_FLUX),
        presets=LBW_PRESETS,
        preset_form=LBW_FLUX,
        entry_targets=(("CLIP", ("TE1",)), ("T5", ("TE3",)), ("BASE", ("TE1", "TE3", "IN"))),
        text_encoder_labels=("TE1", "TE3"),
    ),
    locate=locate,
    own_keys=FLUX_KEYS,
    text_encoder_prefixes=tuple((f"{e.prefix}_", e.label) for e in TEXT_ENCODERS),
    # diffusers / ai-toolkit names (FluxTransformer2DModel, FluxPipeline's encoders); locate() maps
    # the transformer's to the same blocks.
    foreign_unet_prefixes=("transformer.",),
    foreign_text_encoder_prefixes=(("text_encoder_2.", "TE3"), ("text_encoder.", "TE1")),
    unet_target_classes=LAYOUT.all_block_classes,
    text_encoder_target_classes=("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP", "T5Attention", "T5DenseGatedActDense"),
    text_encoder_class_pattern=CLIP_ATTENTION,
    entry_point="lr_weights.flux",
    training_script="flux_train_network.py",
    upstream_module="networks.lora_flux",
    dit=LAYOUT,
    models=(MODEL,),
)
