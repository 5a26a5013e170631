"""Anima (Cosmos-Predict2 DiT + LLM adapter): sd-scripts' `networks/lora_anima.py` layout.

36 blocks, in upstream's creation order: IN (the embedders x_embedder, t_embedder, adapted only
when an `include_patterns` regex rescues them from upstream's default exclude), A00..A05 (the LLM
adapter's layers `llm_adapter.blocks.N`, LLMAdapterTransformerBlock, only with
`train_llm_adapter`), B00..B27 (`blocks.N`, Block) and OUT (final_layer, like IN only when
included). The text encoder is Qwen3 (`lora_te_`, one encoder). No LBW extension knows Anima; the
LBW vector here (ours, docs/anima.md) is TE, IN, A00..A05, B00..B27, OUT: 37 values.
"""

from __future__ import annotations

import re

from lr_weights.archs.base import Architecture, LBWVocabulary, Stack, stack_keys
from lr_weights.archs.dit import DiTLayout, PathFilter, TextEncoder
from lr_weights.archs.signatures import ModelSignature, Signature

NUM_BLOCKS = 28
NUM_ADAPTER = 6
ADAPTER_NAMES = tuple(f"A{i:02d}" for i in range(NUM_ADAPTER))
BLOCK_NAMES = tuple(f"B{i:02d}" for i in range(NUM_BLOCKS))
NAMES = ("IN",) + ADAPTER_NAMES + BLOCK_NAMES + ("OUT",)
IN_BLOCK = 0
ADAPTER_START = 1
BLOCK_START = ADAPTER_START + NUM_ADAPTER
OUT_BLOCK = len(NAMES) - 1

LBW_ANIMA = ("TE",) + NAMES
_ADAPTER = re.compile(r"^lora_unet_llm_adapter_blocks_(\d+)_")
_BLOCK = re.compile(r"^lora_unet_blocks_(\d+)_")
_IN = re.compile(r"^lora_unet_(x_embedder|t_embedder)_")
_OUT = re.compile(r"^lora_unet_final_layer_")


def locate(lora_name: str) -> int:
    """`lora_unet_blocks_7_mlp_layer1` -> B07, `lora_unet_llm_adapter_blocks_2_…` -> A02; the
    embedders -> IN, the final layer -> OUT; -1 elsewhere."""
    for pattern, start, size in ((_ADAPTER, ADAPTER_START, NUM_ADAPTER), (_BLOCK, BLOCK_START, NUM_BLOCKS)):
        match = pattern.match(lora_name)
        if match is not None:
            number = int(match.group(1))
            return start + number if number < size else -1
    if _IN.match(lora_name):
        return IN_BLOCK
    if _OUT.match(lora_name):
        return OUT_BLOCK
    return -1


LAYOUT = DiTLayout(
    train_blocks=(("all", ("Block", "PatchEmbed", "TimestepEmbedding", "FinalLayer")),),
    flag_block_classes=(("train_llm_adapter", ("LLMAdapterTransformerBlock",)),),
    path_filter=PathFilter(default_exclude=r".*(_modulation|_norm|_embedder|final_layer).*"),
    regex_subject="module_path",
    reg_group_order="first_match",
    stack_flags=(("llm_adapter", "train_llm_adapter"),),
    text_encoders=(TextEncoder("lora_te", "TE", "Qwen3"),),
    upstream_keys=("network_reg_dims", "network_reg_lrs", "verbose"),
)
STACKS = (
    Stack("llm_adapter", "llm_adapter_lr_weight", ADAPTER_START, NUM_ADAPTER),
    Stack("block", "block_lr_weight", BLOCK_START, NUM_BLOCKS, dims_key="block_dims", alphas_key="block_alphas"),
)

# The Anima 2B DiT as anima_utils.load_anima_model builds it, and Qwen3-0.6B (models/data/anima*.json).
# Checkpoints: the DiT's own blocks (`net.` prefixed as ComfyUI saves it); LoRA files: lora_anima's
# `blocks.N` / `llm_adapter.blocks.N` names (SD's U-Net blocks are down_/input_blocks).
MODEL = ModelSignature(
    "anima",
    ("anima_te", "anima"),
    checkpoint=Signature(prefixes=("net.llm_adapter.", "llm_adapter."), patterns=(r"(net\.)?blocks\.\d+\.adaln_modulation_self_attn\.",)),
    lora=Signature(prefixes=("lora_unet_blocks_", "lora_unet_llm_adapter_")),
    # Above Lumina (35): Anima's Qwen3 encoder has Lumina's Gemma2 names (lora_te_layers_N_mlp_...),
    # so a file's lora_unet_blocks_ modules must be asked first.
    rank=36,
)

ANIMA = Architecture(
    name="anima",
    title="Anima",
    block_names=NAMES,
    stacks=STACKS,
    moduleless=(),
    lbw=LBWVocabulary(forms=(LBW_ANIMA,), presets=(("ALL", ",".join(["1"] * len(LBW_ANIMA))),), preset_form=LBW_ANIMA, text_encoder_labels=("TE",)),
    locate=locate,
    own_keys=stack_keys(STACKS) + LAYOUT.keys,
    text_encoder_prefixes=(("lora_te_", "TE"),),
    unet_target_classes=LAYOUT.all_block_classes,
    text_encoder_target_classes=("Qwen3Attention", "Qwen3MLP", "Qwen3SdpaAttention", "Qwen3FlashAttention2"),
    entry_point="lr_weights.anima",
    training_script="anima_train_network.py",
    upstream_module="networks.lora_anima",
    dit=LAYOUT,
    models=(MODEL,),
)
