"""Tiny base models saved the ways `lr-weights analyze --model` reads them: a diffusers folder, a
single-file LDM checkpoint (SD1/SD2/SDXL) and a FLUX flow-model file. Random weights, no downloads.

The LDM writer uses lr_weights.analysis.checkpoint.ldm_unet_path, which test_checkpoint.py checks
against sd-scripts' own recorded SDXL module tree, so the round trip is not the mapping tested by
itself. The OpenCLIP text tower is written here by hand (the inverse of the loader's conversion).
"""

import json
import os

import torch
from safetensors.torch import save_file

WIDTHS = (32, 64)
TEXT_WIDTH = 32
BOS, EOS = 49406, 49407


def write_tokenizer(folder, pad="<|endoftext|>"):
    """A CLIP tokenizer that knows single characters only (no merges), with CLIP's special ids;
    OpenCLIP's encoders (SD2, SDXL's second) pad with "!" (id 0), CLIP's with the end token."""
    import transformers

    os.makedirs(folder, exist_ok=True)
    from tests.e2e.sd_scripts_harness import _bytes_to_unicode

    chars = list(_bytes_to_unicode().values())
    vocab = {token: i for i, token in enumerate(chars + [c + "</w>" for c in chars])}
    vocab["<|startoftext|>"] = BOS
    vocab["<|endoftext|>"] = EOS
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as handle:
        json.dump(vocab, handle)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as handle:
        handle.write("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"), model_max_length=77, pad_token=pad)
    tokenizer.save_pretrained(folder)
    return tokenizer


def text_encoder(projection=False, openclip=False, seed=0):
    import transformers

    torch.manual_seed(seed)
    config = transformers.CLIPTextConfig(
        hidden_size=TEXT_WIDTH, intermediate_size=2 * TEXT_WIDTH, num_hidden_layers=2, num_attention_heads=1, vocab_size=EOS + 1,
        max_position_embeddings=77, hidden_act="gelu" if openclip else "quick_gelu", bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS,
        projection_dim=TEXT_WIDTH,
    )
    cls = transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel
    return cls(config).eval()


def unet(model, seed=0):
    import diffusers

    torch.manual_seed(seed)
    common = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=WIDTHS, norm_num_groups=32)
    if model == "sdxl":
        config = dict(
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=[0, 2], cross_attention_dim=2 * TEXT_WIDTH, attention_head_dim=[1, 1], use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=TEXT_WIDTH + 6 * 8,
        )
    else:
        config = dict(
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=TEXT_WIDTH, attention_head_dim=8 if model == "sd1" else [1, 1], use_linear_projection=model == "sd2",
        )
    return diffusers.UNet2DConditionModel(**common, **config).eval()


def parts(model, seed=0):
    """(unet, [text encoders]) of a tiny SD1/SD2/SDXL."""
    if model == "sdxl":
        return unet(model, seed), [text_encoder(seed=seed + 1), text_encoder(projection=True, openclip=True, seed=seed + 2)]
    return unet(model, seed), [text_encoder(openclip=model == "sd2", seed=seed + 1)]


def write_diffusers_folder(folder, model, seed=0):
    model_unet, encoders = parts(model, seed)
    model_unet.save_pretrained(os.path.join(folder, "unet"))
    names = ("text_encoder", "text_encoder_2")
    for index, encoder in enumerate(encoders):
        encoder.save_pretrained(os.path.join(folder, names[index]))
        openclip = model == "sd2" or index == 1
        write_tokenizer(os.path.join(folder, "tokenizer" if index == 0 else "tokenizer_2"), "!" if openclip else "<|endoftext|>")
    with open(os.path.join(folder, "model_index.json"), "w") as handle:
        json.dump({"_class_name": "StableDiffusionXLPipeline" if model == "sdxl" else "StableDiffusionPipeline"}, handle)
    return folder


def hf_state(encoder):
    """The encoder's tensors under transformers' checkpoint names (text_model.*), whichever
    transformers built it (5.x's CLIPTextModel has no text_model level)."""
    state = encoder.state_dict()
    if hasattr(encoder, "text_model"):
        return state
    return {"text_model." + k: v for k, v in state.items()}


def _openclip(encoder, prefix):
    state = hf_state(encoder)
    out = {
        prefix + "token_embedding.weight": state["text_model.embeddings.token_embedding.weight"],
        prefix + "positional_embedding": state["text_model.embeddings.position_embedding.weight"],
        prefix + "ln_final.weight": state["text_model.final_layer_norm.weight"],
        prefix + "ln_final.bias": state["text_model.final_layer_norm.bias"],
    }
    if "text_projection.weight" in state:
        out[prefix + "text_projection"] = state["text_projection.weight"].T.contiguous()
    for i in range(encoder.config.num_hidden_layers):
        source, target = f"text_model.encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for a, b in (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("self_attn.out_proj", "attn.out_proj"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
            for p in ("weight", "bias"):
                out[f"{target}{b}.{p}"] = state[f"{source}{a}.{p}"]
        for p in ("weight", "bias"):
            out[f"{target}attn.in_proj_{p}"] = torch.cat([state[f"{source}self_attn.{n}.{p}"] for n in ("q_proj", "k_proj", "v_proj")])
    return out


def write_single_file(path, model, seed=0):
    from lr_weights.analysis.checkpoint import ldm_unet_path

    model_unet, encoders = parts(model, seed)
    up_attention = [t.startswith("CrossAttn") for t in model_unet.config.up_block_types]
    tensors = {"model.diffusion_model." + ldm_unet_path(k, up_attention): v for k, v in model_unet.state_dict().items()}
    if model == "sd1":
        tensors.update({"cond_stage_model.transformer." + k: v for k, v in hf_state(encoders[0]).items()})
    elif model == "sd2":
        # SD2's checkpoint holds one layer more than it conditions on (the penultimate is used): the
        # extra last layer is a copy, which the loader must leave out to match the folder's encoder.
        tower = _openclip(encoders[0], "cond_stage_model.model.")
        last = encoders[0].config.num_hidden_layers - 1
        prefix = f"cond_stage_model.model.transformer.resblocks.{last}."
        tower.update({k.replace(prefix, f"cond_stage_model.model.transformer.resblocks.{last + 1}."): v * 3 for k, v in tower.items() if k.startswith(prefix)})
        tensors.update(tower)
    else:
        tensors.update({"conditioner.embedders.0.transformer." + k: v for k, v in hf_state(encoders[0]).items()})
        tensors.update(_openclip(encoders[1], "conditioner.embedders.1.model."))
    save_file({k: v.contiguous() for k, v in tensors.items() if not k.endswith("position_ids")}, str(path))
    return path


def write_flux_file(path, config, seed=0, prefix=""):
    from lr_weights.models.tiny_flux import build_tiny_flux

    encoders, flux = build_tiny_flux(seed, config)
    save_file({prefix + k: v.contiguous() for k, v in flux.state_dict().items()}, str(path))
    return encoders, flux


CLIP_L_FOLDER, T5_FOLDER = "openai_clip-vit-large-patch14", "google_t5-v1_1-xxl"  # sd-scripts' --tokenizer_cache_dir names


def flux_text_encoder_configs(config, t5_vocab):
    """(CLIPTextConfig, T5Config) keyword arguments of tiny FLUX.1 text encoders at `config`'s widths
    (CLIP-L: vec_in_dim, T5: context_in_dim); JSON-able, so sd-scripts' interpreter can build the same."""
    clip = dict(
        hidden_size=config.vec_in_dim, intermediate_size=2 * config.vec_in_dim, num_hidden_layers=2, num_attention_heads=1, vocab_size=EOS + 1,
        max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS,
    )
    # 2 heads of half the width: the loader must read both off the tensors (relative bias, q's width).
    t5 = dict(
        vocab_size=t5_vocab, d_model=config.context_in_dim, d_kv=config.context_in_dim // 2, d_ff=2 * config.context_in_dim, num_layers=2, num_heads=2,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False, use_cache=False,
    )
    return clip, t5


def write_flux_text_encoders(folder, config, seed=0, tokenizers=None):
    """FLUX.1's text encoders at `config`'s widths as sd-scripts takes them: clip_l.safetensors and
    t5xxl.safetensors (transformers' layout; T5's token embedding stored once, under shared.weight),
    and, unless `tokenizers` names a folder that has them, their tokenizers in sd-scripts'
    --tokenizer_cache_dir layout: CLIP's single-character BPE, a small Unigram T5 (tests/e2e/flux_harness).
    Returns (clip_l path, t5xxl path, tokenizer folder, (clip, t5) as built)."""
    import transformers
    from pathlib import Path

    from tests.e2e.flux_harness import build_t5_tokenizer

    folder = Path(folder)
    if tokenizers is None:
        tokenizers = folder / "tokenizers"
        write_tokenizer(tokenizers / CLIP_L_FOLDER)
        build_t5_tokenizer(tokenizers)
    t5_vocab = len(transformers.AutoTokenizer.from_pretrained(str(Path(tokenizers) / T5_FOLDER), local_files_only=True))
    clip_config, t5_config = flux_text_encoder_configs(config, t5_vocab)
    torch.manual_seed(seed)
    clip = transformers.CLIPTextModel(transformers.CLIPTextConfig(**clip_config)).eval()
    t5 = transformers.T5EncoderModel(transformers.T5Config(**t5_config)).eval()
    clip_path, t5_path = folder / "clip_l.safetensors", folder / "t5xxl.safetensors"
    save_file({k: v.contiguous() for k, v in hf_state(clip).items() if not k.endswith("position_ids")}, str(clip_path))
    t5_state = {k: v.contiguous() for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(t5_state, str(t5_path))
    return clip_path, t5_path, tokenizers, (clip, t5)
