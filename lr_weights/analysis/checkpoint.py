"""Single-file Stable Diffusion checkpoints (the LDM layout sd-scripts also reads) in diffusers' layout.

One pure name mapping, written from the two layouts' structure, serves both directions:
`ldm_unet_path` turns a diffusers U-Net module path into the LDM one (input_blocks / middle_block /
output_blocks, which are also sd-scripts' SDXL LoRA names), so a diffusers model is filled from an
LDM state dict key by key, and a diffusers SDXL U-Net gets sd-scripts' SDXL LoRA names. The U-Net
config starts from the family's shipped config (analysis/data/*.json, diffusers' field names) and
takes every width, depth and count from the tensors, so any checkpoint of the family's layout
loads, the tiny ones of the tests included. OpenCLIP text encoders (SD2, SDXL's second) are turned
into transformers' CLIP layout the same way.
"""

from __future__ import annotations

import json
import os
import re
from typing import Callable, Dict, List, Optional, Sequence

import torch

UNET_PREFIX = "model.diffusion_model."
_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_FIXED = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_PART = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)(?:\.(.*))?$")
_MID = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)(?:\.(.*))?$")


def shipped_config(name: str) -> dict:
    with open(os.path.join(_DATA, f"{name}.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _resnet_path(rest: Optional[str]) -> Optional[str]:
    if not rest:
        return ""
    head, _, tail = rest.partition(".")
    mapped = _RESNET.get(head)
    if mapped is None:
        return None
    return mapped + ("." + tail if tail else "")


def _join(*parts: Optional[str]) -> str:
    return ".".join(p for p in parts if p)


def ldm_unet_path(path: str, up_attention: Sequence[bool], layers_per_block: int = 2) -> Optional[str]:
    """diffusers U-Net path (module or parameter) -> LDM path; None for paths with no LDM twin.

    Down level i holds input_blocks 1+(n+1)i .. (n+1)(i+1) (n resnets, then the downsampler);
    up level i holds output_blocks (n+1)i ..; an upsampler follows the resnet (and attention, where
    `up_attention[i]`) of its level's last output block. SD1/SD2/SDXL all have n = 2.
    """
    for head, mapped in _FIXED.items():
        if path == head or path.startswith(head + "."):
            return mapped + path[len(head):]
    n = layers_per_block
    match = _PART.match(path)
    if match is not None:
        direction, level, kind, position, rest = match.group(1), int(match.group(2)), match.group(3), int(match.group(4)), match.group(5)
        if direction == "down_blocks":
            if kind == "downsamplers":
                return _join(f"input_blocks.{(n + 1) * (level + 1)}.0.op", (rest or "").replace("conv", "", 1).lstrip(".")) if (rest or "").startswith("conv") else None
            block = f"input_blocks.{(n + 1) * level + position + 1}"
        else:
            if kind == "upsamplers":
                index = 2 if up_attention[level] else 1
                return _join(f"output_blocks.{(n + 1) * level + n}.{index}", rest)
            block = f"output_blocks.{(n + 1) * level + position}"
        if kind == "resnets":
            inner = _resnet_path(rest)
            return None if inner is None else _join(block + ".0", inner)
        return _join(block + ".1", rest)
    match = _MID.match(path)
    if match is not None:
        kind, position, rest = match.group(1), int(match.group(2)), match.group(3)
        if kind == "attentions":
            return _join("middle_block.1", rest)
        inner = _resnet_path(rest)
        return None if inner is None else _join(f"middle_block.{2 * position}", inner)
    return None


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """All tensors of a .safetensors / .ckpt / .pt checkpoint on the CPU; errors name the file."""
    path = os.fspath(path)
    if path.lower().endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as error:
            raise ValueError(f"{path} is not a readable safetensors checkpoint ({type(error).__name__}: {error})") from None
    from lr_weights.models.reference import load_torch_checkpoint

    return load_torch_checkpoint(path, "cpu")


def _count(keys: Sequence[str], pattern: str) -> int:
    found = {int(m.group(1)) for m in (re.match(pattern, k) for k in keys) if m}
    return max(found) + 1 if found else 0


def unet_config(state: Dict[str, torch.Tensor], family: str, path: str, pooled_dim: int = 1280) -> dict:
    """diffusers UNet2DConditionModel config for an LDM U-Net state dict (without its prefix);
    SDXL's label_emb input is the pooled text (`pooled_dim`) then 6 size/crop embeddings."""
    config = shipped_config(f"{family}_unet")
    keys = list(state)
    inputs = _count(keys, r"input_blocks\.(\d+)\.")
    levels = inputs // 3  # n = 2: conv_in + 3 per level, minus the last level's missing downsampler
    if inputs != 3 * levels or levels < 1:
        raise ValueError(f"{path}: {inputs} input blocks is not an SD/SDXL U-Net with 2 resnets per level")
    widths, depths = [], []
    for level in range(levels):
        block = 3 * level + 1
        widths.append(int(state[f"input_blocks.{block}.0.out_layers.3.weight"].shape[0]))
        depths.append(_count(keys, rf"input_blocks\.{block}\.1\.transformer_blocks\.(\d+)\."))
    config["block_out_channels"] = widths
    config["in_channels"] = int(state["input_blocks.0.0.weight"].shape[1])
    config["out_channels"] = int(state["out.2.weight"].shape[0])
    config["down_block_types"] = ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths]
    config["up_block_types"] = ["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in reversed(depths)]
    attention = next(k for k in keys if k.endswith("attn2.to_k.weight"))
    config["cross_attention_dim"] = int(state[attention].shape[1])
    if family == "sdxl":
        config["transformer_layers_per_block"] = depths
        label_inputs = int(state["label_emb.0.0.weight"].shape[1])
        config["projection_class_embeddings_input_dim"] = label_inputs
        config["addition_time_embed_dim"] = (label_inputs - pooled_dim) // 6
    # Heads: SD1 has 8 per attention, SD2 and SDXL 64 channels each (diffusers calls both attention_head_dim).
    config["attention_head_dim"] = 8 if family == "sd1" else [max(1, w // 64) for w in widths]
    config["norm_num_groups"] = int(min(32, widths[0]))
    return config


def diffusers_unet_from_ldm(state: Dict[str, torch.Tensor], family: str, path: str, pooled_dim: int = 1280):
    """A diffusers U-Net filled from an LDM state dict (keys without "model.diffusion_model.")."""
    import diffusers

    config = unet_config(state, family, path, pooled_dim)
    unet = diffusers.UNet2DConditionModel(**config)
    up_attention = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    converted = {}
    for key in unet.state_dict():
        source = ldm_unet_path(key, up_attention)
        if source is None or source not in state:
            raise ValueError(f"{path}: no tensor {UNET_PREFIX}{source or '?'} for the U-Net's {key}: expected a complete {family.upper()} checkpoint")
        tensor = state[source]
        target_shape = unet.state_dict()[key].shape
        if tensor.shape != target_shape:  # SD1's 1x1-conv projections where diffusers has them as Linear, or back
            tensor = tensor.reshape(target_shape)
        converted[key] = tensor
    unet.load_state_dict(converted)
    return unet.eval()


# ---- text encoders ---------------------------------------------------------------------------


def _openclip_to_hf(state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """OpenCLIP text tower (prefix...) -> transformers CLIPTextModel(WithProjection) keys."""
    out = {
        "text_model.embeddings.token_embedding.weight": state[prefix + "token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": state[prefix + "positional_embedding"],
        "text_model.final_layer_norm.weight": state[prefix + "ln_final.weight"],
        "text_model.final_layer_norm.bias": state[prefix + "ln_final.bias"],
    }
    if prefix + "text_projection" in state:
        out["text_projection.weight"] = state[prefix + "text_projection"].T.contiguous()
    layers = _count(list(state), re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.")
    for i in range(layers):
        source, target = f"{prefix}transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}."
        for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("attn.out_proj", "self_attn.out_proj"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            for p in ("weight", "bias"):
                out[f"{target}{b}.{p}"] = state[f"{source}{a}.{p}"]
        for p in ("weight", "bias"):
            for name, part in zip(("q_proj", "k_proj", "v_proj"), state[f"{source}attn.in_proj_{p}"].chunk(3, dim=0)):
                out[f"{target}self_attn.{name}.{p}"] = part
    return out


def _hf_prefixed(state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def clip_text_model(state: Dict[str, torch.Tensor], projection: bool, openclip: bool, path: str):
    """A transformers CLIP text model from HF-layout keys; widths, depth and vocabulary from the tensors."""
    import transformers

    config = shipped_config("clip_text")
    width = int(state["text_model.embeddings.token_embedding.weight"].shape[1])
    config.update(
        hidden_size=width,
        intermediate_size=int(state["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
        num_hidden_layers=_count(list(state), r"text_model\.encoder\.layers\.(\d+)\."),
        num_attention_heads=max(1, width // 64),
        vocab_size=int(state["text_model.embeddings.token_embedding.weight"].shape[0]),
        max_position_embeddings=int(state["text_model.embeddings.position_embedding.weight"].shape[0]),
        hidden_act="gelu" if openclip else "quick_gelu",
    )
    if projection:
        config["projection_dim"] = int(state["text_projection.weight"].shape[0]) if "text_projection.weight" in state else width
    cls = transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel
    model = cls(transformers.CLIPTextConfig(**config))
    if not hasattr(model, "text_model"):  # transformers 5's CLIPTextModel has no text_model level
        state = {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing:
        raise ValueError(f"{path}: its text encoder has no {missing[0]} ({len(missing)} tensors missing): expected a complete checkpoint")
    return model.eval()


def text_encoders_from_ldm(state: Dict[str, torch.Tensor], family: str, path: str) -> List:
    """The family's text encoders from a single-file checkpoint, in sd-scripts' order."""
    if family == "sd1":
        return [clip_text_model(_hf_prefixed(state, "cond_stage_model.transformer."), False, False, path)]
    if family == "sd2":
        # SD2 conditions on the penultimate layer (then the final norm): the last layer is left out.
        converted = _openclip_to_hf(state, "cond_stage_model.model.")
        last = _count(list(converted), r"text_model\.encoder\.layers\.(\d+)\.") - 1
        converted = {k: v for k, v in converted.items() if not k.startswith(f"text_model.encoder.layers.{last}.")}
        return [clip_text_model(converted, False, True, path)]
    first = clip_text_model(_hf_prefixed(state, "conditioner.embedders.0.transformer."), False, False, path)
    second = clip_text_model(_openclip_to_hf(state, "conditioner.embedders.1.model."), True, True, path)
    return [first, second]


def ldm_unet_state(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return _hf_prefixed(state, UNET_PREFIX)


def sdxl_pooled_dim(state: Dict[str, torch.Tensor]) -> int:
    projection = state.get("conditioner.embedders.1.model.text_projection")
    return int(projection.shape[1]) if projection is not None else 1280


Renamer = Callable[[str], Optional[str]]
