"""The package's tiny models (lr_weights.models) as denoisers, for the tests, the benchmark and the
worked example in docs/analyze.md. Same names and block layout as the real models, random weights."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from lr_weights.analysis.denoiser import Denoiser, named_layers
from lr_weights.archs.blocks import FLUX, SD, SDXL


def _ids(encoder, prompts: Sequence[str], device) -> torch.Tensor:
    from lr_weights.models.tiny import tiny_token_ids

    return tiny_token_ids(prompts, encoder.cfg).to(device)


def tiny_sd_denoiser(text_encoder, unet, model: str = "sd1") -> Denoiser:
    """tiny.py's SD1-layout U-Net and CLIP stand-in."""

    def encode(prompts: Sequence[str]):
        return {"context": text_encoder(_ids(text_encoder, prompts, unet.conv_in.weight.device))}

    def predict(x, t, cond):
        return unet(x, t, cond["context"])

    layers = {**named_layers(text_encoder, "lora_te"), **named_layers(unet, "lora_unet")}
    return Denoiser(model, SD, unet, (text_encoder,), layers, lambda r: (unet.cfg.in_channels, r // 8, r // 8), 64, 64, False, encode, predict)


def tiny_sdxl_denoiser(text_encoders, unet) -> Denoiser:
    """tiny_sdxl.py's U-Net: context = both encoders' states side by side, y = the second's EOS state."""
    first, second = text_encoders

    def encode(prompts: Sequence[str]):
        device = unet.out[2].weight.device
        states = [encoder(_ids(encoder, prompts, device)) for encoder in (first, second)]
        return {"context": torch.cat(states, dim=-1), "y": states[1][:, -1]}

    def predict(x, t, cond):
        return unet(x, t, cond["context"], cond["y"])

    layers = {**named_layers(first, "lora_te1"), **named_layers(second, "lora_te2"), **named_layers(unet, "lora_unet")}
    return Denoiser("sdxl", SDXL, unet, (first, second), layers, lambda r: (unet.cfg.in_channels, r // 8, r // 8), 64, 32, False, encode, predict)


def tiny_flux_denoiser(text_encoders, flux) -> Denoiser:
    """tiny_flux.py's flow model: one token per 16x16 pixels (FLUX packs 2x2 latents of /8),
    txt = the T5 stand-in's states, y = the CLIP stand-in's EOS state, guidance 3.5 (dev's default)."""
    clip, t5 = text_encoders

    def encode(prompts: Sequence[str]):
        device = flux.img_in.weight.device
        cond = {"txt": t5(_t5_ids(t5, prompts, device))}
        cond["y"] = clip(_ids(clip, prompts, device))[:, -1] if clip is not None else torch.zeros(len(prompts), flux.cfg.vec_in_dim, device=device)
        return cond

    def predict(x, t, cond):
        guidance = torch.full_like(t, 3.5) if flux.cfg.guidance_embed else None
        return flux(x, cond["txt"], t, cond["y"], guidance)

    layers = {**named_layers(clip, "lora_te1"), **named_layers(t5, "lora_te3"), **named_layers(flux, "lora_unet")}
    return Denoiser("flux", FLUX, flux, (clip, t5), layers, lambda r: ((r // 16) ** 2, flux.cfg.in_channels), 64, 16, True, encode, predict)


def _t5_ids(t5, prompts: Sequence[str], device) -> torch.Tensor:
    vocab = t5.shared.num_embeddings
    rows = [[ord(c) % (vocab - 1) for c in p][:7] + [vocab - 1] for p in prompts]
    width = 8
    return torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long, device=device)


def tiny_denoiser(model: str, seed: int = 0, config: Optional[object] = None) -> Denoiser:
    """A fresh tiny model of `model` (sd1, sdxl, flux) with random weights from `seed`."""
    if model == "sdxl":
        from lr_weights.models.tiny_sdxl import SdxlConfig, build_tiny_sdxl

        return tiny_sdxl_denoiser(*build_tiny_sdxl(seed, config or SdxlConfig()))
    if model == "flux":
        from lr_weights.models.tiny_flux import FluxConfig, build_tiny_flux

        return tiny_flux_denoiser(*build_tiny_flux(seed, config or FluxConfig()))
    from lr_weights.models.tiny import UNetConfig, build_tiny_sd

    return tiny_sd_denoiser(*build_tiny_sd(seed, config or UNetConfig()), model=model)
