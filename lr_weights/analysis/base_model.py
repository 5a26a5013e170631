"""The base model for `analyze`, loaded the way sd-scripts takes --pretrained_model_name_or_path.

- a diffusers folder of SD1/SD2/SDXL (unet/, text_encoder/, tokenizer/, ...): diffusers and
  transformers load it, nothing is downloaded; prompts are tokenized by its own tokenizers;
- a single-file SD1/SD2/SDXL checkpoint (.safetensors / .ckpt, the LDM layout): converted by
  analysis/checkpoint.py into diffusers' U-Net and transformers' CLIP (configs shipped as data, all
  sizes read off the tensors); no tokenizer comes with it, so only the empty prompt is encoded
  (its token ids are fixed: BOS, EOS, padding);
- FLUX.1: the flow model file (BFL names, optionally under model.diffusion_model.) in
  lr_weights.models.tiny_flux.Flux with FLUX's rotary positions, plus, when given (always with
  prompts), CLIP-L and T5-XXL from their own files with their tokenizers from local folders
  (analysis/flux_text.py, as sd-scripts' --clip_l / --t5xxl / --tokenizer_cache_dir); without
  them the conditioning is zero text states and a zero pooled vector.
Which of these a path is comes from its names only (models.reference.model_of_checkpoint), so a
wrong path fails before anything is loaded.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from typing import TYPE_CHECKING, Iterator, Optional, Sequence

import torch

from lr_weights.analysis.denoiser import Denoiser, clip_layers, named_layers
from lr_weights.archs.blocks import FLUX, SD, SDXL
from lr_weights.errors import NetworkArgError

if TYPE_CHECKING:
    from lr_weights.analysis.flux_text import FluxTextEncoders

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
BOS, EOS = 49406, 49407  # CLIP's start/end tokens; SD1 and SDXL's first encoder pad with EOS, OpenCLIP ones with 0
FLUX_ZERO_TEXT_TOKENS = 256  # zero T5 states (no text encoders given): schnell's length, the cheaper one


def parse_dtype(text: str) -> torch.dtype:
    if str(text).lower() not in DTYPES:
        raise NetworkArgError("--dtype", text, "fp32, bf16 or fp16")
    return DTYPES[str(text).lower()]


def parse_device(text: str) -> torch.device:
    try:
        device = torch.device(str(text))
    except RuntimeError:
        raise NetworkArgError("--device", text, "cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NetworkArgError("--device", text, "cpu: this torch sees no CUDA device")
    if device.type not in ("cpu", "cuda", "mps", "xpu"):
        raise NetworkArgError("--device", text, "cpu, cuda or cuda:N")
    return device


def _optional(module: str, purpose: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"{purpose} needs {module}: pip install 'lr-weights[diffusers]'") from None


def model_of_path(path: str) -> str:
    """sd1, sd2, sdxl or flux for a model path, from names only; one-line errors naming the path."""
    from lr_weights.models.reference import model_of_checkpoint

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"--model {path}: no such file or folder (expected a diffusers folder or a .safetensors/.ckpt checkpoint)")
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "transformer", "config.json")):
        raise ValueError(f"--model {path} is a diffusers FLUX folder: expected the flow model file (flux1-dev.safetensors), as sd-scripts takes it")
    try:
        return model_of_checkpoint(path)
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(f"--model {path}: cannot read it as a model ({error}); expected a diffusers SD1/SD2/SDXL folder, or a single-file SD1/SD2/SDXL checkpoint or FLUX.1 flow model") from None


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """diffusers' and transformers' own loading bars off while loading (analyze has its own bar)."""
    switched = []
    for name in ("diffusers", "transformers"):
        try:
            logging_module = importlib.import_module(f"{name}.utils.logging")
        except ImportError:
            continue
        if logging_module.is_progress_bar_enabled():
            logging_module.disable_progress_bar()
            switched.append(logging_module)
    try:
        yield
    finally:
        for logging_module in switched:
            logging_module.enable_progress_bar()


def load_denoiser(path: str, device: torch.device, dtype: torch.dtype, model: str = "", flux_text: Optional["FluxTextEncoders"] = None) -> Denoiser:
    """The model at `path`; `flux_text` (flux_text.parse_flux_text_encoders): FLUX.1's text encoders."""
    path = os.fspath(path)
    model = model or model_of_path(path)
    if model == "flux":
        denoiser = _flux_file(path, flux_text)
    else:
        with _quiet_progress_bars():
            denoiser = _diffusers_folder(path, model) if os.path.isdir(path) else _single_file(path, model)
    for module in (denoiser.net,) + tuple(e for e in denoiser.text_encoders if e is not None):
        module.requires_grad_(False).to(device)
        if next(module.parameters()).dtype != dtype:
            module.to(dtype)
    return denoiser


# ---- SD1 / SD2 / SDXL ------------------------------------------------------------------------


def _sd_denoiser(model: str, unet, encoders: Sequence, tokenize, tokenizes: bool) -> Denoiser:
    """A diffusers U-Net with transformers CLIP encoders; `tokenize(i, prompts)` gives encoder i's ids."""
    from lr_weights.analysis.checkpoint import ldm_unet_path

    sdxl = model == "sdxl"
    if sdxl:
        up_attention = [t.startswith("CrossAttn") for t in unet.config.up_block_types]
        unet_layers = named_layers(unet, "lora_unet", lambda p: ldm_unet_path(p, up_attention))
        prefixes = ("lora_te1", "lora_te2")
    else:
        unet_layers = named_layers(unet, "lora_unet")
        prefixes = ("lora_te",)
    layers = dict(unet_layers)
    for prefix, encoder in zip(prefixes, encoders):
        layers.update(clip_layers(encoder, prefix))

    def encode(prompts: Sequence[str]):
        device = unet.conv_in.weight.device
        if not sdxl:
            return {"context": encoders[0](tokenize(0, prompts).to(device))[0]}
        first = encoders[0](tokenize(0, prompts).to(device), output_hidden_states=True)
        second = encoders[1](tokenize(1, prompts).to(device), output_hidden_states=True)
        return {"context": torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1), "pooled": second.text_embeds}

    def predict(x, t, cond):
        extra = {}
        if sdxl:
            size = x.shape[-1] * 8
            time_ids = torch.tensor([size, size, 0, 0, size, size], device=x.device, dtype=x.dtype).repeat(x.shape[0], 1)
            extra["added_cond_kwargs"] = {"text_embeds": cond["pooled"], "time_ids": time_ids}
        return unet(x, t, encoder_hidden_states=cond["context"], **extra).sample

    channels = unet.config.in_channels
    levels = len(unet.config.block_out_channels) - 1
    arch = SDXL if sdxl else SD
    default = {"sd1": 512, "sd2": 768, "sdxl": 1024}[model]
    return Denoiser(model, arch, unet, tuple(encoders), layers, lambda r: (channels, r // 8, r // 8), default, 8 * 2**levels, False, encode, predict, tokenizes)


def _diffusers_folder(path: str, model: str) -> Denoiser:
    diffusers = _optional("diffusers", f"--model {path} (a diffusers folder)")
    transformers = _optional("transformers", f"--model {path} (a diffusers folder)")
    sdxl = model == "sdxl"
    unet = diffusers.UNet2DConditionModel.from_pretrained(path, subfolder="unet", local_files_only=True).eval()
    encoders = [transformers.CLIPTextModel.from_pretrained(path, subfolder="text_encoder", local_files_only=True).eval()]
    tokenizers = [transformers.CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True)]
    if sdxl:
        encoders.append(transformers.CLIPTextModelWithProjection.from_pretrained(path, subfolder="text_encoder_2", local_files_only=True).eval())
        tokenizers.append(transformers.CLIPTokenizer.from_pretrained(path, subfolder="tokenizer_2", local_files_only=True))

    def tokenize(index: int, prompts: Sequence[str]) -> torch.Tensor:
        tokenizer = tokenizers[index]
        return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids

    return _sd_denoiser(model, unet, encoders, tokenize, True)


def _single_file(path: str, model: str) -> Denoiser:
    from lr_weights.analysis.checkpoint import diffusers_unet_from_ldm, ldm_unet_state, read_state_dict, sdxl_pooled_dim, text_encoders_from_ldm

    _optional("diffusers", f"--model {path} (a single-file checkpoint)")
    _optional("transformers", f"--model {path} (a single-file checkpoint)")
    state = read_state_dict(path)
    unet = diffusers_unet_from_ldm(ldm_unet_state(state), model, path, sdxl_pooled_dim(state))
    encoders = text_encoders_from_ldm(state, model, path)
    del state
    openclip = (False,) if model == "sd1" else (True,) if model == "sd2" else (False, True)

    def tokenize(index: int, prompts: Sequence[str]) -> torch.Tensor:
        # Only the empty prompt (check_settings refuses others): BOS, EOS, then padding.
        length = encoders[index].config.max_position_embeddings
        pad = 0 if openclip[index] else EOS
        return torch.tensor([[BOS, EOS] + [pad] * (length - 2)] * len(prompts))

    return _sd_denoiser(model, unet, encoders, tokenize, False)


# ---- FLUX.1 ----------------------------------------------------------------------------------


def _flux_file(path: str, text: Optional["FluxTextEncoders"] = None) -> Denoiser:
    from lr_weights.analysis.checkpoint import read_state_dict
    from lr_weights.models.tiny_flux import Flux, flux_config_of_state

    state = read_state_dict(path)
    prefix = "model.diffusion_model."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    config = flux_config_of_state(state, path)
    with torch.device("meta"):
        flux = Flux(config)
    flux.load_state_dict(state, assign=True)
    flux.eval()
    del state

    def predict(x, t, cond):
        guidance = torch.full_like(t, 3.5) if config.guidance_embed else None
        return flux(x, cond["txt"], t, cond["y"], guidance)

    layers = named_layers(flux, "lora_unet")
    if text is None:
        encoders = (None, None)

        def encode(prompts: Sequence[str]):
            parameter = flux.img_in.weight
            return {
                "txt": torch.zeros(len(prompts), FLUX_ZERO_TEXT_TOKENS, config.context_in_dim, device=parameter.device, dtype=parameter.dtype),
                "y": torch.zeros(len(prompts), config.vec_in_dim, device=parameter.device, dtype=parameter.dtype),
            }

    else:
        from lr_weights.analysis.flux_text import flux_text_encode, load_clip_l, load_t5xxl, t5_tokens

        encoders = (load_clip_l(text.clip_l), load_t5xxl(text.t5xxl))
        encode = flux_text_encode(encoders[0], encoders[1], text, text.t5_tokens or t5_tokens(config.guidance_embed))
        layers = {**clip_layers(encoders[0], "lora_te1"), **named_layers(encoders[1], "lora_te3"), **layers}
    return Denoiser("flux", FLUX, flux, encoders, layers, lambda r: ((r // 16) ** 2, config.in_channels), 1024, 16, True, encode, predict, text is not None)
