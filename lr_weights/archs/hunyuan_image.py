"""HunyuanImage 2.1: sd-scripts' `networks/lora_hunyuan_image.py` layout (a subclass of lora_flux).

60 blocks: D00..D19 (`double_blocks.N`, MMDoubleStreamBlock) and S00..S39 (`single_blocks.N`,
MMSingleStreamBlock). Upstream adapts every Linear of these blocks and nothing else: no text
encoder, no in layers, no final layer; none of lora_flux's block selections or component dims.
The LBW vector (no LBW extension knows this family; this order is ours, docs/hunyuan_image.md) is
one value per block, D00..D19 then S00..S39.
"""

from __future__ import annotations

import re

from lr_weights.archs.base import Architecture, LBWVocabulary, Stack, stack_keys
from lr_weights.archs.dit import DiTLayout, SplitRule
from lr_weights.archs.signatures import ModelSignature, Signature

NUM_DOUBLE = 20
NUM_SINGLE = 40
DOUBLE_NAMES = tuple(f"D{i:02d}" for i in range(NUM_DOUBLE))
SINGLE_NAMES = tuple(f"S{i:02d}" for i in range(NUM_SINGLE))
NAMES = DOUBLE_NAMES + SINGLE_NAMES

_BLOCK = re.compile(r"^lora_unet_(double|single)_blocks_(\d+)_")


def locate(lora_name: str) -> int:
    """`lora_unet_single_blocks_3_linear1` -> 23 (S03); -1 outside the blocks."""
    match = _BLOCK.match(lora_name)
    if match is None:
        return -1
    number = int(match.group(2))
    if match.group(1) == "double":
        return number if number < NUM_DOUBLE else -1
    return NUM_DOUBLE + number if number < NUM_SINGLE else -1


LAYOUT = DiTLayout(
    train_blocks=(("all", ("MMDoubleStreamBlock", "MMSingleStreamBlock")),),
    # double blocks' img/txt_attn_qkv: q, k, v; single blocks' linear1: q, k, v and the MLP input
    # (upstream hard-codes 3584 / 14336; the parts here come from the layer's own shape)
    split_rules=(SplitRule(("double", "qkv"), "equal", 3), SplitRule(("single", "linear1"), "qkv+rest")),
    no_effect_keys=("conv_dim", "conv_alpha"),
    no_effect_reason="HunyuanImage's blocks have no convs (upstream reads it and ignores it too)",
    upstream_keys=("split_qkv", "network_reg_dims", "network_reg_lrs", "ggpo_beta", "ggpo_sigma", "verbose"),
    norm_hooks=True,  # lora_flux's LoRANetwork has update_grad_norms & co.
)
STACKS = (
    Stack("double", "double_lr_weight", 0, NUM_DOUBLE, dims_key="double_block_dims", alphas_key="double_block_alphas"),
    Stack("single", "single_lr_weight", NUM_DOUBLE, NUM_SINGLE, dims_key="single_block_dims", alphas_key="single_block_alphas"),
)

# HYImageDiffusionTransformer() (models/data/hunyuan_image.json; no text encoder is adapted). Its
# names are lora_flux's block names with its own layers (FLUX: img_attn.qkv, img_mod_lin, img_mlp_0,
# modulation_lin), so it is tried before FLUX.
MODEL = ModelSignature(
    "hunyuan_image",
    ("hunyuan_image",),
    checkpoint=Signature(patterns=(r"(model\.diffusion_model\.)?double_blocks\.\d+\.img_attn_qkv\.",)),
    lora=Signature(patterns=(r"lora_unet_(double_blocks_\d+_(img|txt)_(mod_linear|mlp_fc[12])|single_blocks_\d+_modulation_linear)$",)),
    rank=40,
)

HUNYUAN_IMAGE = Architecture(
    name="hunyuan_image",
    title="HunyuanImage-2.1",
    block_names=NAMES,
    stacks=STACKS,
    moduleless=(),
    lbw=LBWVocabulary(forms=(NAMES,), presets=(("ALL", ",".join(["1"] * len(NAMES))),), preset_form=NAMES, text_encoder_labels=()),
    locate=locate,
    own_keys=stack_keys(STACKS) + LAYOUT.keys,
    text_encoder_prefixes=(),
    unet_target_classes=LAYOUT.all_block_classes,
    entry_point="lr_weights.hunyuan_image",
    training_script="hunyuan_image_train_network.py",
    upstream_module="networks.lora_hunyuan_image",
    dit=LAYOUT,
    models=(MODEL,),
)
