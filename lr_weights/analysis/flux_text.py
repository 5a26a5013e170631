"""FLUX.1's text encoders for `analyze`, read the way sd-scripts' flux_train_network reads them.

- CLIP-L and T5-XXL from single safetensors files (`--clip-l`, `--t5xxl`: transformers' layout,
  as sd-scripts' flux_utils.load_clip_l / load_t5xxl take them); the configs are shipped as data
  (analysis/data/clip_text.json, t5xxl_encoder.json) and every size is read off the tensors;
- their tokenizers from local folders only, never the network: `--tokenizer-dir DIR` in
  sd-scripts' --tokenizer_cache_dir layout (DIR/openai_clip-vit-large-patch14,
  DIR/google_t5-v1_1-xxl), else the Hugging Face cache as HF_HUB_OFFLINE reads it;
- the conditioning as sd-scripts' FluxTextEncodingStrategy builds it (apply_t5_attn_mask off, its
  default): T5's last hidden states over max-length padded tokens (512 for dev, 256 for schnell,
  as flux_train_network picks them) as `txt`, CLIP-L's pooled output (the final-norm state at the
  end token) as `y`. Text positions are zeros in the flow model's forward, as sd-scripts' txt_ids.

Everything that can be refused is refused by `parse_flux_text_encoders`, before any model loads.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from lr_weights.errors import NetworkArgError

CLIP_L_TOKENIZER = "openai/clip-vit-large-patch14"  # sd-scripts' strategy_flux tokenizer ids
T5_TOKENIZER = "google/t5-v1_1-xxl"
CLIP_TOKENS = 77  # sd-scripts tokenizes CLIP-L to 77 tokens
CLIP_TOKEN_EMBEDDING = "text_model.embeddings.token_embedding.weight"
T5_EMBEDDING_KEYS = ("shared.weight", "encoder.embed_tokens.weight")  # one tensor, stored under either or both
T5_RELATIVE_BIAS = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"


def t5_tokens(guidance_embed: bool) -> int:
    """sd-scripts' default --t5xxl_max_token_length: 512 for dev, 256 for schnell (no guidance_in)."""
    return 512 if guidance_embed else 256


@dataclass(frozen=True)
class FluxTextEncoders:
    clip_l: str  # file paths
    t5xxl: str
    clip_tokenizer: object  # transformers tokenizers, loaded from local folders
    t5_tokenizer: object
    t5_tokens: Optional[int] = None  # --t5xxl-max-token-length; None: sd-scripts' default for the model


def _transformers(flag: str, path: str):
    try:
        return importlib.import_module("transformers")
    except ImportError:
        raise ValueError(f"{flag} {path} needs transformers: pip install 'lr-weights[diffusers]'") from None


def _tensor_shapes(flag: str, path: str) -> dict:
    """Key -> shape of a safetensors file, from its header only."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag} {path}: no such file (expected a .safetensors text encoder, as sd-scripts' --{flag[2:].replace('-', '_')} takes it)")
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for non-safetensors input
        raise ValueError(f"{flag} {path} is not a readable safetensors file ({type(error).__name__}: {error})") from None


def _flow_model_widths(model_path: str) -> Optional[tuple]:
    """(CLIP-L width, T5 width) the flow model takes (vector_in, txt_in); None when not a safetensors file."""
    if not str(model_path).lower().endswith(".safetensors"):
        return None
    shapes = _tensor_shapes("--model", model_path)
    prefix = "model.diffusion_model." if any(k.startswith("model.diffusion_model.") for k in shapes) else ""
    vector, text = shapes.get(prefix + "vector_in.in_layer.weight"), shapes.get(prefix + "txt_in.weight")
    return None if vector is None or text is None else (vector[1], text[1])


def _check_encoder_files(clip_l: str, t5xxl: str, model_path: str) -> None:
    clip_shapes, t5_shapes = _tensor_shapes("--clip-l", clip_l), _tensor_shapes("--t5xxl", t5xxl)
    if CLIP_TOKEN_EMBEDDING not in clip_shapes:
        raise ValueError(f"--clip-l {clip_l} has no {CLIP_TOKEN_EMBEDDING}: expected CLIP-L's text encoder in transformers' layout (text_model.*), as sd-scripts' clip_l.safetensors")
    t5_embedding = next((t5_shapes[k] for k in T5_EMBEDDING_KEYS if k in t5_shapes), None)
    if t5_embedding is None or T5_RELATIVE_BIAS not in t5_shapes:
        raise ValueError(f"--t5xxl {t5xxl} has no shared.weight / {T5_RELATIVE_BIAS}: expected T5-XXL's encoder in transformers' layout (encoder.block.N...), as sd-scripts' t5xxl_fp16.safetensors")
    for flag, path, shapes in (("--clip-l", clip_l, clip_shapes), ("--t5xxl", t5xxl, t5_shapes)):
        # ComfyUI's "scaled" fp8 files keep a per-tensor scale beside each weight: read as plain weights they would be wrong.
        if "scaled_fp8" in shapes or any(k.endswith(".scale_weight") for k in shapes):
            raise ValueError(f"{flag} {path} is a scaled fp8 file (weights with .scale_weight beside them), which sd-scripts does not read either: expected an fp16/bf16/plain fp8 text encoder")
    widths = _flow_model_widths(model_path)
    if widths is None:
        return
    for flag, path, width, expected, feeds in (("--clip-l", clip_l, clip_shapes[CLIP_TOKEN_EMBEDDING][1], widths[0], "vector_in"), ("--t5xxl", t5xxl, t5_embedding[1], widths[1], "txt_in")):
        if width != expected:
            raise ValueError(f"{flag} {path} is {width} wide but the flow model {model_path}'s {feeds} takes {expected}: expected the text encoders of this model")


def _tokenizer(cls, repo: str, tokenizer_dir: Optional[str]):
    """`repo`'s tokenizer from `tokenizer_dir` (sd-scripts' cache layout) or the HF cache; never downloaded."""
    folder = repo.replace("/", "_")
    source = os.path.join(tokenizer_dir, folder) if tokenizer_dir else repo
    if tokenizer_dir and not os.path.isdir(source):
        raise NetworkArgError("--tokenizer-dir", tokenizer_dir, f"a folder holding {folder}/ (sd-scripts' --tokenizer_cache_dir layout); it has no {folder}/")
    try:
        return cls.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as error:
        where = source if tokenizer_dir else "the Hugging Face cache"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"no {repo} tokenizer in {where} ({reason}); nothing is downloaded: give --tokenizer-dir DIR holding {folder}/ (sd-scripts' --tokenizer_cache_dir)") from None


def parse_flux_text_encoders(
    model: str, prompts: Sequence[str], clip_l: Optional[str], t5xxl: Optional[str], tokenizer_dir: Optional[str], model_path: str = "the model", max_tokens: Optional[str] = None
) -> Optional[FluxTextEncoders]:
    """FLUX.1's text encoders and tokenizers for `--model` of family `model`, or None (no encoders:
    zero conditioning); every refusal names its flag. Loads the tokenizers only (small)."""
    flags = (("--clip-l", clip_l), ("--t5xxl", t5xxl), ("--tokenizer-dir", tokenizer_dir), ("--t5xxl-max-token-length", max_tokens))
    given = {flag: value for flag, value in flags if value}
    if model != "flux":
        if given:
            flag = next(iter(given))
            raise NetworkArgError(flag, given[flag], f"no {flag} with a {model.upper()} model: it is one of FLUX.1's text encoders (--model flux1-dev.safetensors); a diffusers folder brings its own")
        return None
    missing = [flag for flag, value in (("--clip-l", clip_l), ("--t5xxl", t5xxl)) if not value]
    if prompts and missing:
        raise ValueError(f"--prompt with a FLUX.1 model needs its text encoders: give {' and '.join(f + ' FILE' for f in missing)} (sd-scripts' clip_l.safetensors / t5xxl_fp16.safetensors)")
    if len(missing) == 2:
        extra = next((flag for flag in ("--tokenizer-dir", "--t5xxl-max-token-length") if flag in given), None)
        if extra:
            raise NetworkArgError(extra, given[extra], f"no {extra} without --clip-l and --t5xxl (it is about their input)")
        return None
    if missing:
        present = next(flag for flag in ("--clip-l", "--t5xxl") if flag not in missing)
        raise ValueError(f"{present} needs {missing[0]} too: FLUX.1 conditions on both text encoders (CLIP-L's pooled output and T5-XXL's states)")
    if tokenizer_dir and not os.path.isdir(tokenizer_dir):
        raise NetworkArgError("--tokenizer-dir", tokenizer_dir, "an existing folder (sd-scripts' --tokenizer_cache_dir layout)")
    from lr_weights.args.scalars import parse_int

    tokens = None if max_tokens is None else parse_int("--t5xxl-max-token-length", max_tokens, minimum=1)
    _check_encoder_files(clip_l, t5xxl, model_path)
    transformers = _transformers("--clip-l", clip_l)
    t5_class = getattr(transformers, "T5TokenizerFast", None) or transformers.T5Tokenizer
    return FluxTextEncoders(clip_l, t5xxl, _tokenizer(transformers.CLIPTokenizer, CLIP_L_TOKENIZER, tokenizer_dir), _tokenizer(t5_class, T5_TOKENIZER, tokenizer_dir), tokens)


# ---- the encoders ----------------------------------------------------------------------------


def load_clip_l(path: str):
    """transformers' CLIPTextModel from a clip_l.safetensors (CLIP-L's config, sizes from the tensors)."""
    from lr_weights.analysis.checkpoint import clip_text_model, read_state_dict

    state = {k: v for k, v in read_state_dict(path).items() if k.startswith("text_model.")}
    return clip_text_model(state, projection=False, openclip=False, path=path)


def load_t5xxl(path: str):
    """transformers' T5EncoderModel from a t5xxl_*.safetensors: T5 v1.1-XXL's config (shipped) with every
    size read off the tensors, built on the meta device and given the file's tensors (no 4.7B-parameter init)."""
    import re

    from lr_weights.analysis.checkpoint import read_state_dict, shipped_config

    transformers = _transformers("--t5xxl", path)
    state = {k: v for k, v in read_state_dict(path).items() if k.startswith(("shared.", "encoder."))}
    embedding = next((state[k] for k in T5_EMBEDDING_KEYS if k in state), None)
    first_ff = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight"
    if embedding is None or T5_RELATIVE_BIAS not in state or first_ff not in state:
        raise ValueError(f"--t5xxl {path} has no shared.weight / {T5_RELATIVE_BIAS} / {first_ff}: expected T5 v1.1-XXL's encoder (gated feed-forward) in transformers' layout")
    for key in T5_EMBEDDING_KEYS:  # the encoder's token embedding is the shared one
        state[key] = embedding
    buckets, heads = state[T5_RELATIVE_BIAS].shape
    config = shipped_config("t5xxl_encoder")
    config.update(
        vocab_size=int(embedding.shape[0]),
        d_model=int(embedding.shape[1]),
        d_ff=int(state[first_ff].shape[0]),
        num_layers=len({m.group(1) for m in (re.match(r"encoder\.block\.(\d+)\.", k) for k in state) if m}),
        num_heads=int(heads),
        d_kv=int(state["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]) // int(heads),
        relative_attention_num_buckets=int(buckets),
    )
    with torch.device("meta"):
        model = transformers.T5EncoderModel(transformers.T5Config(**config))
    missing, _ = model.load_state_dict(state, strict=False, assign=True)
    if missing:
        raise ValueError(f"--t5xxl {path} has no {missing[0]} ({len(missing)} tensors missing): expected a complete T5-XXL encoder")
    return model.eval()


def flux_text_encode(clip, t5, text: FluxTextEncoders, tokens: int) -> Callable[[Sequence[str]], dict]:
    """prompts -> {"txt": T5 states (P, tokens, width), "y": CLIP-L pooled (P, width)}, with whatever
    weights the encoders hold when called (the measure merges the LoRA's text-encoder rows in)."""

    def encode(prompts: Sequence[str]) -> dict:
        device = next(t5.parameters()).device
        clip_ids = text.clip_tokenizer(list(prompts), max_length=CLIP_TOKENS, padding="max_length", truncation=True, return_tensors="pt").input_ids
        t5_ids = text.t5_tokenizer(list(prompts), max_length=tokens, padding="max_length", truncation=True, return_tensors="pt").input_ids
        return {"txt": t5(t5_ids.to(device)).last_hidden_state, "y": clip(clip_ids.to(device)).pooler_output}

    return encode
