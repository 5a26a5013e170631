"""SD3 / SD3.5 (MMDiT): sd-scripts' `networks/lora_sd3.py` layout.

Blocks: IN (the `emb_dims` embedders context_embedder, t_embedder, x_embedder, y_embedder),
J00..J{n-1} (`joint_blocks.N`, each a context_block and an x_block SingleDiTBlock) and OUT
(final_layer's adaLN_modulation and linear, also only through `emb_dims`). The joint-block count
is the loaded model's: 24 for SD3 medium and SD3.5 medium, 38 for SD3.5 large, so the layout is
built per count (`sd3_architecture`). LoRA Block Weight has no SD3 vocabulary, so there is none here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Optional

from lr_weights.archs.base import Architecture, LBWVocabulary, Stack, stack_keys
from lr_weights.archs.dit import DiTLayout, SplitRule, TextEncoder, numbered_blocks
from lr_weights.archs.sd import CLIP_ATTENTION
from lr_weights.archs.signatures import ModelSignature, Signature

if TYPE_CHECKING:
    from torch import nn

MEDIUM_JOINT_BLOCKS = 24  # SD3 medium, SD3.5 medium
LARGE_JOINT_BLOCKS = 38  # SD3.5 large

_JOINT = re.compile(r"^lora_unet_joint_blocks_(\d+)_")
# emb_dims filters of lora_sd3, in its order: context, t, x, y, final_mod, final_linear
# ("_t_embedder": "t_embedder" alone would also match context_embedder).
EMB_FILTERS = ("context_embedder", "_t_embedder", "x_embedder", "y_embedder", "final_layer_adaLN_modulation", "final_layer_linear")
_IN = re.compile(r"^lora_unet_(context_embedder|t_embedder|x_embedder|y_embedder)(_|$)")
_OUT = re.compile(r"^lora_unet_final_layer(_|$)")
# diffusers / ai-toolkit names (SD3Transformer2DModel), as shared LoRA files use them.
_DIFFUSERS_JOINT = re.compile(r"^transformer\.transformer_blocks\.(\d+)\.")
_DIFFUSERS_IN = re.compile(r"^transformer\.(pos_embed|context_embedder|time_text_embed)\b")
_DIFFUSERS_OUT = re.compile(r"^transformer\.(norm_out|proj_out)\b")

# What lora_sd3 reads off the model (archs/dit.py says what each field means).
TEXT_ENCODERS = (
    TextEncoder("lora_te1", "TE1", "CLIP-L"),
    TextEncoder("lora_te2", "TE2", "CLIP-G"),
    TextEncoder("lora_te3", "TE3", "T5XXL", trained_by="train_t5xxl"),
)
LAYOUT = DiTLayout(
    train_blocks=(("all", ("SingleDiTBlock",)),),  # both halves of every joint block; no train_blocks arg
    # upstream's type_dims, in its order of precedence (x_block + attn also names attn2)
    component_dims=(
        ("context_attn_dim", ("context_block", "attn")),
        ("context_mlp_dim", ("context_block", "mlp")),
        ("context_mod_dim", ("context_block", "adaLN_modulation")),
        ("x_attn_dim", ("x_block", "attn")),
        ("x_mlp_dim", ("x_block", "mlp")),
        ("x_mod_dim", ("x_block", "adaLN_modulation")),
    ),
    in_dims_key="emb_dims",
    in_layers=tuple(zip(("context", "t", "x", "y", "final_mod", "final_linear"), EMB_FILTERS)),
    in_conv=True,  # x_embedder.proj is the patch Conv2d
    block_selections=(("train_block_indices", "joint"),),
    split_rules=(SplitRule(("joint_blocks", "qkv"), "equal", 3),),  # attn.qkv and attn2.qkv: q, k, v
    text_encoders=TEXT_ENCODERS,
    upstream_keys=("split_qkv", "verbose"),
)


def joint_block_names(num_joint: int):
    return tuple(f"J{i:02d}" for i in range(num_joint))


def _locator(num_joint: int):
    out_block = num_joint + 1

    def locate(lora_name: str) -> int:
        """`lora_unet_joint_blocks_3_x_block_attn_qkv` -> 4 (J03); upstream reads the same number
        from the fifth `_` field. diffusers names (`transformer.transformer_blocks.3.attn.to_q`) too."""
        for pattern in (_JOINT, _DIFFUSERS_JOINT):
            match = pattern.match(lora_name)
            if match is not None:
                number = int(match.group(1))
                return 1 + number if number < num_joint else -1
        if _IN.match(lora_name) or _DIFFUSERS_IN.match(lora_name):
            return 0
        if _OUT.match(lora_name) or _DIFFUSERS_OUT.match(lora_name):
            return out_block
        return -1

    return locate


def joint_block_count(mmdit: Optional["nn.Module"]) -> int:
    """How many joint blocks `mmdit` has (`joint_blocks.N`); the medium count when there is no model."""
    if mmdit is None:
        return MEDIUM_JOINT_BLOCKS
    count = numbered_blocks(mmdit, "joint_blocks")
    if count == 0:
        raise ValueError(f"{type(mmdit).__name__} has no joint_blocks.N modules: not an SD3 MMDiT")
    return count


# SD3.5 medium / large with CLIP-L (with its projection), CLIP-G and T5-XXL as sd3_utils builds
# them (CLIP-G and T5-XXL are the trees SDXL's te2 and FLUX's te3 files hold). Their LoRA files
# share lora_te1_/lora_te3_ with SDXL's and FLUX's, so they rank above both; a joint block past
# the 24th tells large from medium.
_TEXT_ENCODER_SKELETONS = ("sd3_te1", "sdxl_te2", "flux_te3")
_LARGE_JOINT = r"(2[4-9]|3[0-7])"
MODELS = {
    MEDIUM_JOINT_BLOCKS: ModelSignature(
        "sd3",
        _TEXT_ENCODER_SKELETONS + ("sd35_medium",),
        checkpoint=Signature(prefixes=("joint_blocks.", "model.diffusion_model.joint_blocks.")),
        lora=Signature(prefixes=("lora_unet_joint_blocks_",)),
        rank=40,
    ),
    LARGE_JOINT_BLOCKS: ModelSignature(
        "sd3-large",
        _TEXT_ENCODER_SKELETONS + ("sd35_large",),
        checkpoint=Signature(patterns=(rf"(model\.diffusion_model\.)?joint_blocks\.{_LARGE_JOINT}\.",)),
        lora=Signature(patterns=(rf"lora_unet_joint_blocks_{_LARGE_JOINT}_",)),
        rank=41,
    ),
}


def sd3_architecture(num_joint: int = MEDIUM_JOINT_BLOCKS) -> Architecture:
    """The SD3 layout for a model with `num_joint` joint blocks."""
    if num_joint < 1:
        raise ValueError(f"an SD3 model has at least one joint block, got {num_joint}")
    stacks = (Stack("joint", "joint_lr_weight", 1, num_joint, dims_key="joint_block_dims", alphas_key="joint_block_alphas"),)
    return Architecture(
        name="sd3" if num_joint == MEDIUM_JOINT_BLOCKS else ("sd3-large" if num_joint == LARGE_JOINT_BLOCKS else f"sd3-{num_joint}"),
        title="SD3" if num_joint == MEDIUM_JOINT_BLOCKS else f"SD3 ({num_joint} joint blocks)",
        block_names=("IN",) + joint_block_names(num_joint) + ("OUT",),
        stacks=stacks,
        moduleless=(),
        lbw=LBWVocabulary(
            forms=(), presets=(), preset_form=(),
            text_encoder_labels=tuple(e.label for e in TEXT_ENCODERS),
            text_encoder_rows=tuple((e.label, e.title) for e in TEXT_ENCODERS),
        ),
        locate=_locator(num_joint),
        own_keys=stack_keys(stacks) + LAYOUT.keys,
        text_encoder_prefixes=tuple((f"{e.prefix}_", e.label) for e in TEXT_ENCODERS),
        foreign_unet_prefixes=("transformer.",),  # diffusers SD3Transformer2DModel, mapped by locate()
        unet_target_classes=LAYOUT.all_block_classes,
        text_encoder_target_classes=("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP", "T5Attention", "T5DenseGatedActDense"),
        text_encoder_class_pattern=CLIP_ATTENTION,
        entry_point="lr_weights.sd3",
        training_script="sd3_train_network.py",
        upstream_module="networks.lora_sd3",
        dit=LAYOUT,
        models=(MODELS[num_joint],) if num_joint in MODELS else (),
    )


def architecture_of(mmdit: Optional["nn.Module"]) -> Architecture:
    """The SD3 layout of the loaded model (24 joint blocks: SD3 / SD3.5 medium; 38: SD3.5 large)."""
    return sd3_architecture(joint_block_count(mmdit))


SD3 = sd3_architecture(MEDIUM_JOINT_BLOCKS)
SD3_LARGE = sd3_architecture(LARGE_JOINT_BLOCKS)
