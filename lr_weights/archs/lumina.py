"""Lumina 2 (NextDiT): sd-scripts' `networks/lora_lumina.py` layout.

Blocks, in the order upstream creates their modules: IN (the `embedder_dims` embedders x_embedder,
t_embedder, cap_embedder), C0, C1 (`context_refiner.N`, no modulation), N0, N1 (`noise_refiner.N`),
L00..L{n-1} (`layers.N`) and OUT (final_layer, adapted by default: upstream targets
JointTransformerBlock and FinalLayer). `refiner_lr_weight` addresses C0, C1, N0, N1 (4 values);
`layer_lr_weight` one value per main layer: 26 for Lumina 2 2B, the count is the loaded model's.
LoRA Block Weight has no Lumina vocabulary, so there is none here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Optional

from lr_weights.archs.base import Architecture, LBWVocabulary, Stack, stack_keys
from lr_weights.archs.dit import DiTLayout, SplitRule, TextEncoder, numbered_blocks
from lr_weights.archs.signatures import ModelSignature, Signature

if TYPE_CHECKING:
    from torch import nn

LUMINA2_LAYERS = 26  # Lumina 2 2B (NextDiT_2B_GQA_patch2_Adaln_Refiner), Neta-Lumina
NUM_REFINERS = 2  # context_refiner and noise_refiner each

# embedder_dims filters of lora_lumina, in its order: x, t, cap.
EMBEDDER_FILTERS = ("x_embedder", "t_embedder", "cap_embedder")
_LAYER = re.compile(r"^lora_unet_layers_(\d+)_")
_CONTEXT = re.compile(r"^lora_unet_context_refiner_(\d+)_")
_NOISE = re.compile(r"^lora_unet_noise_refiner_(\d+)_")
_IN = re.compile(r"^lora_unet_(x_embedder|t_embedder|cap_embedder)(_|$)")
_OUT = re.compile(r"^lora_unet_final_layer(_|$)")
# diffusers names (Lumina2Transformer2DModel), as shared LoRA files use them.
_DIFFUSERS_LAYER = re.compile(r"^transformer\.layers\.(\d+)\.")
_DIFFUSERS_CONTEXT = re.compile(r"^transformer\.context_refiner\.(\d+)\.")
_DIFFUSERS_NOISE = re.compile(r"^transformer\.noise_refiner\.(\d+)\.")

# What lora_lumina reads off the model (archs/dit.py says what each field means).
TEXT_ENCODERS = (TextEncoder("lora_te", "TE", "Gemma2", group="textencoder"),)
BLOCK_CLASSES = ("JointTransformerBlock", "FinalLayer")
LAYOUT = DiTLayout(
    # upstream selects by name, not class: every value adapts these classes, filtered below
    train_blocks=tuple((value, BLOCK_CLASSES) for value in ("all", "transformer", "refiners", "noise_refiner", "context_refiner")),
    train_block_filters=(
        ("transformer", ("layers_",)),
        ("refiners", ("noise_refiner", "context_refiner")),  # upstream's two passes, noise first
        ("noise_refiner", ("noise_refiner",)),
        ("context_refiner", ("context_refiner",)),
    ),
    # upstream's type_dims, first match wins. No DiT layer name has "mlp" (the FFN is
    # feed_forward_w1/w2/w3): mlp_dim reaches only t_embedder_mlp_* (with embedder_dims), as upstream.
    component_dims=(
        ("attn_dim", ("attention",)),
        ("mlp_dim", ("mlp",)),
        ("mod_dim", ("modulation",)),
        ("refiner_dim", ("refiner",)),
    ),
    in_dims_key="embedder_dims",
    in_layers=tuple(zip(("x", "t", "cap"), EMBEDDER_FILTERS)),
    # Upstream never passes train_block_indices on (and its check would crash on final_layer);
    # here it selects main layers, as its code intends.
    block_selections=(("train_block_indices", "layer"),),
    # attention.qkv: q (n_heads x head_dim = hidden) and k, v (n_kv_heads x head_dim each), from the
    # layer's shape (upstream hard-codes 2B's 2304/768/768 and never builds the split modules)
    split_rules=(SplitRule(("attention_qkv",), "q+kv"),),
    text_encoders=TEXT_ENCODERS,
    no_effect_keys=("conv_dim", "conv_alpha"),
    no_effect_reason="Lumina 2 has no convs (upstream lora_lumina reads it and adapts only Linears)",
    upstream_keys=("split_qkv", "verbose"),
)


def refiner_block_names():
    return tuple(f"C{i}" for i in range(NUM_REFINERS)) + tuple(f"N{i}" for i in range(NUM_REFINERS))


def layer_block_names(num_layers: int):
    return tuple(f"L{i:02d}" for i in range(num_layers))


def _locator(num_layers: int):
    layer_start = 1 + 2 * NUM_REFINERS
    out_block = layer_start + num_layers

    def locate(lora_name: str) -> int:
        """`lora_unet_layers_3_attention_qkv` -> L03; refiners -> C0/C1/N0/N1; diffusers names too."""
        for patterns, start, size in (
            ((_CONTEXT, _DIFFUSERS_CONTEXT), 1, NUM_REFINERS),
            ((_NOISE, _DIFFUSERS_NOISE), 1 + NUM_REFINERS, NUM_REFINERS),
            ((_LAYER, _DIFFUSERS_LAYER), layer_start, num_layers),
        ):
            for pattern in patterns:
                match = pattern.match(lora_name)
                if match is not None:
                    number = int(match.group(1))
                    return start + number if number < size else -1
        if _IN.match(lora_name):
            return 0
        if _OUT.match(lora_name):
            return out_block
        return -1

    return locate


def layer_count(model: Optional["nn.Module"]) -> int:
    """How many main layers `model` has (`layers.N`); Lumina 2 2B's count when there is no model."""
    if model is None:
        return LUMINA2_LAYERS
    count = numbered_blocks(model, "layers")
    if count == 0:
        raise ValueError(f"{type(model).__name__} has no layers.N modules: not a Lumina NextDiT")
    return count


# Lumina 2 2B with Gemma2 2B as lumina_util builds them. Its Gemma2 modules are `lora_te_layers_`,
# not SD's `lora_te_text_model_`; it ranks above SD, whose signature is the fallback.
MODEL = ModelSignature(
    "lumina",
    ("lumina2_te", "lumina2"),
    checkpoint=Signature(prefixes=("noise_refiner.", "model.diffusion_model.noise_refiner.")),
    lora=Signature(patterns=(r"lora_unet_(layers|context_refiner|noise_refiner)_\d+_", r"lora_te_layers_\d+_(self_attn|mlp)_")),
    rank=35,
)


def lumina_architecture(num_layers: int = LUMINA2_LAYERS) -> Architecture:
    """The Lumina 2 layout for a model with `num_layers` main layers (and 2 + 2 refiners)."""
    if num_layers < 1:
        raise ValueError(f"a Lumina model has at least one layer, got {num_layers}")
    stacks = (
        Stack("refiner", "refiner_lr_weight", 1, 2 * NUM_REFINERS),
        Stack("layer", "layer_lr_weight", 1 + 2 * NUM_REFINERS, num_layers, dims_key="layer_block_dims", alphas_key="layer_block_alphas"),
    )
    return Architecture(
        name="lumina",
        title="Lumina 2" if num_layers == LUMINA2_LAYERS else f"Lumina 2 ({num_layers} layers)",
        block_names=("IN",) + refiner_block_names() + layer_block_names(num_layers) + ("OUT",),
        stacks=stacks,
        moduleless=(),
        lbw=LBWVocabulary(forms=(), presets=(), preset_form=(), text_encoder_labels=("TE",)),
        locate=_locator(num_layers),
        own_keys=stack_keys(stacks) + LAYOUT.keys,
        text_encoder_prefixes=(("lora_te_", "TE"),),
        foreign_unet_prefixes=("transformer.",),  # diffusers Lumina2Transformer2DModel, mapped by locate()
        unet_target_classes=BLOCK_CLASSES,
        text_encoder_target_classes=("Gemma2Attention", "Gemma2FlashAttention2", "Gemma2SdpaAttention", "Gemma2MLP"),
        entry_point="lr_weights.lumina",
        training_script="lumina_train_network.py",
        upstream_module="networks.lora_lumina",
        dit=LAYOUT,
        models=(MODEL,) if num_layers == LUMINA2_LAYERS else (),
    )


def architecture_of(model: Optional["nn.Module"]) -> Architecture:
    """The Lumina layout of the loaded model (26 layers: Lumina 2 2B)."""
    return lumina_architecture(layer_count(model))


LUMINA = lumina_architecture(LUMINA2_LAYERS)
