"""SDXL: sd-scripts' own U-Net (LDM names), 23 blocks: EMB, IN00..IN08, M00..M02, OUT00..OUT08, FINAL."""

from __future__ import annotations

import re

from lr_weights.archs.base import Architecture, LBWVocabulary, Stack
from lr_weights.archs.sdxl_names import DIFFUSERS_NAMES, sdxl_ldm_module_name
from lr_weights.archs.signatures import ModelSignature, Signature
from lr_weights.archs.sd import LBW_PRESETS, LBW_SHORT, SD_BLOCK_LIST_KEYS
from lr_weights.archs.sd import SD as _SD

NAMES = tuple(["EMB"] + [f"IN{i:02d}" for i in range(9)] + [f"M{i:02d}" for i in range(3)] + [f"OUT{i:02d}" for i in range(9)] + ["FINAL"])

# LBW's SDXL vectors: BLOCKID20 and BLOCKID12; one M00 for sd-scripts' three middle blocks.
LBW_FULL = ("BASE",) + tuple(f"IN{i:02d}" for i in range(9)) + ("M00",) + tuple(f"OUT{i:02d}" for i in range(9))
LBW_SHORT_XL = ("BASE", "IN04", "IN05", "IN07", "IN08", "M00") + tuple(f"OUT{i:02d}" for i in range(6))

UNET_PARTS = r"^lora_unet_(input_blocks|middle_block|output_blocks)_"
_PART = re.compile(UNET_PARTS + r"(\d+)_")
_BASES = {"input_blocks": 1, "middle_block": 10, "output_blocks": 13}


def locate(lora_name: str) -> int:
    match = _PART.match(lora_name)
    if match is None:
        return -1
    return _BASES[match.group(1)] + int(match.group(2))


MODEL = ModelSignature(
    "sdxl",
    ("sdxl_te1", "sdxl_te2", "sdxl_unet"),
    checkpoint=Signature(prefixes=("conditioner.embedders.1.", "model.diffusion_model.label_emb.")),
    lora=Signature(prefixes=("lora_te1_", "lora_te2_"), patterns=(UNET_PARTS,)),
    rank=20,
    diffusers_folders=("text_encoder_2",),
    # sd-scripts decides by isinstance(unet, SdxlUNet2DConditionModel); importing that class would
    # tie us to one sd-scripts version, so the class name or the LDM-style structure tell.
    module_classes=("SdxlUNet2DConditionModel",),
    module_attributes=("input_blocks", "middle_block", "output_blocks"),
)

SDXL = Architecture(
    training_script="sdxl_train_network.py",
    name="sdxl",
    title="SDXL",
    block_names=NAMES,
    stacks=(
        Stack("down", "down_lr_weight", 1, 9, pads_or_cuts=True),
        Stack("mid", "mid_lr_weight", 10, 3, presets=False, pads_or_cuts=True),
        Stack("up", "up_lr_weight", 13, 9, pads_or_cuts=True),
    ),
    # EMB (time/label embedding) and FINAL (out) are in sd-scripts' list but never hold a module;
    # input_blocks_0 (IN00) is conv_in.
    moduleless=(0, 1, 22),
    lbw=LBWVocabulary(
        forms=(LBW_SHORT_XL, LBW_FULL),
        # LBW's presets are SD vectors; on SDXL it applies them by block name, so do we.
        presets=LBW_PRESETS,
        preset_form=LBW_SHORT,
        entry_targets=(("BASE", ("TE",)), ("M00", ("M00", "M01", "M02"))),
    ),
    locate=locate,
    block_list_keys=SD_BLOCK_LIST_KEYS,
    own_keys=_SD.own_keys,
    text_encoder_prefixes=_SD.text_encoder_prefixes,
    unet_target_classes=_SD.unet_target_classes,
    unet_conv_target_classes=_SD.unet_conv_target_classes,
    text_encoder_target_classes=_SD.text_encoder_target_classes,
    text_encoder_class_pattern=_SD.text_encoder_class_pattern,
    models=(MODEL,),
    foreign_name_pattern=DIFFUSERS_NAMES,
    rename_foreign=sdxl_ldm_module_name,
)
