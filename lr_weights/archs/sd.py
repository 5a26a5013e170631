"""SD1.x / SD2.x: sd-scripts' 25 U-Net blocks (the LDM layout IN00..IN11, M00, OUT00..OUT11)."""

from __future__ import annotations

import re

from lr_weights.archs.base import Architecture, LBWVocabulary, Stack
from lr_weights.archs.signatures import ModelSignature, Signature

NAMES = tuple([f"IN{i:02d}" for i in range(12)] + ["M00"] + [f"OUT{i:02d}" for i in range(12)])

# LBW (hako-mikan/sd-webui-lora-block-weight, scripts/lora_block_weight.py): BLOCKID26 and
# BLOCKID17 (the blocks a plain LoRA has), BASE = the text encoder.
LBW_FULL = ("BASE",) + NAMES
LBW_SHORT = ("BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00") + tuple(f"OUT{i:02d}" for i in range(3, 12))
# Its built-in presets (DEF_WEIGHT_PRESET), all written in the 17-value layout.
LBW_PRESETS = (
    ("NONE", "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0"),
    ("ALL", "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1"),
    ("INS", "1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0"),
    ("IND", "1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0"),
    ("INALL", "1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0"),
    ("MIDD", "1,0,0,0,1,1,1,1,1,1,1,1,0,0,0,0,0"),
    ("OUTD", "1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0"),
    ("OUTS", "1,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,1"),
    ("OUTALL", "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1"),
    ("ALL0.5", "0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5"),
)

_UPDOWN = re.compile(r"(up|down)_blocks_(\d+)_(resnets|upsamplers|downsamplers|attentions)_(\d+)_")


def locate(lora_name: str) -> int:
    """diffusers-named U-Net module -> LDM block: level i of down holds blocks 1+3i..3+3i, the
    sampler always third; up the same from 13; the mid block is 12."""
    match = _UPDOWN.search(lora_name)
    if match is not None:
        direction, level, kind, position = match.group(1), int(match.group(2)), match.group(3), int(match.group(4))
        within = 2 if kind in ("upsamplers", "downsamplers") else position
        offset = 1 if direction == "down" else 13
        return offset + 3 * level + within
    if "mid_block_" in lora_name:
        return 12
    return -1


# Any CLIP*Attention: newer transformers add attention classes with CLIPAttention's role.
CLIP_ATTENTION = r"CLIP.*Attention"
SD_BLOCK_LIST_KEYS = ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas")

# SD2's text encoder (OpenCLIP ViT-H) has 23 layers, SD1's (CLIP-L) 12; without text-encoder
# modules SD2 shows in the cross-attention key width, 1024 (SD1: 768).
MODELS = (
    ModelSignature(
        "sd1",
        ("sd1_te", "sd1_unet"),
        checkpoint=Signature(prefixes=("model.diffusion_model.",)),
        lora=Signature(),
        diffusers_folders=(),
    ),
    ModelSignature(
        "sd2",
        ("sd2_te", "sd2_unet"),
        checkpoint=Signature(prefixes=("model.diffusion_model.",), required=("cond_stage_model.model.",)),
        lora=Signature(patterns=(r"lora_te_text_model_encoder_layers_(1[2-9]|[2-9]\d|\d{3,})_",), shape=("attn2_to_k", 1, 1024), shape_prefix="lora_unet"),
        rank=10,
        diffusers_folders=(),
        diffusers_unet_config=(("cross_attention_dim", 1024),),
    ),
)

SD = Architecture(
    name="sd",
    title="SD1.x/SD2.x",
    block_names=NAMES,
    stacks=(
        Stack("down", "down_lr_weight", 0, 12),
        Stack("mid", "mid_lr_weight", 12, 1, presets=False),
        Stack("up", "up_lr_weight", 13, 12),
    ),
    moduleless=(0,),  # IN00 is conv_in
    lbw=LBWVocabulary(
        forms=(LBW_SHORT, LBW_FULL),
        presets=LBW_PRESETS,
        preset_form=LBW_SHORT,
        entry_targets=(("BASE", ("TE",)),),
    ),
    locate=locate,
    block_list_keys=SD_BLOCK_LIST_KEYS,
    own_keys=("down_lr_weight", "mid_lr_weight", "up_lr_weight", "conv_dim", "conv_alpha", "conv_dims", "conv_alphas", "fa", "unit")
    + SD_BLOCK_LIST_KEYS,
    text_encoder_prefixes=(("lora_te1_", "TE1"), ("lora_te2_", "TE2"), ("lora_te_", "TE")),
    unet_target_classes=("Transformer2DModel",),
    unet_conv_target_classes=("ResnetBlock2D", "Downsample2D", "Upsample2D"),
    text_encoder_target_classes=("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP"),
    text_encoder_class_pattern=CLIP_ATTENTION,
    models=MODELS,
)
