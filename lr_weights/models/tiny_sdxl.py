"""A small, runnable SDXL-shaped U-Net for the tests and benchmarks (no downloads, random init).

The module tree has sd-scripts' SDXL names (`SdxlUNet2DConditionModel`: time_embed, label_emb,
input_blocks.N, middle_block.N, output_blocks.N, out) and its layer order, so LoRA names and block
indices are those of SDXL (IN00..IN08, M00..M02, OUT00..OUT08): three levels, no attention in the
first, 2 resnets down and 3 up per level, Linear projections in the transformers. The widths and
transformer depths are whatever you ask for (SDXL: 320/640/1280, depths 0/2/10). Text encoders are
two tiny CLIP stand-ins whose hidden states are concatenated, as SDXL's; the pooled vector
(label_emb's input) is the second encoder's EOS state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from torch import nn

from lr_weights.models.tiny import CLIPTextModel, TextEncoderConfig, Transformer2DModel, Upsample2D, timestep_features


@dataclass(frozen=True)
class SdxlConfig:
    widths: Tuple[int, int, int] = (16, 32, 64)  # SDXL: (320, 640, 1280)
    depths: Tuple[int, int, int] = (0, 1, 2)  # transformer blocks per attention, per level; SDXL (0, 2, 10)
    heads: int = 2
    text_widths: Tuple[int, int] = (16, 16)  # SDXL: (768, 1280); context = their sum
    groups: int = 8
    in_channels: int = 4


class ResnetBlock2D(nn.Module):
    """sd-scripts' SDXL resnet: in_layers (norm, SiLU, conv), emb_layers (SiLU, Linear), out_layers
    (norm, SiLU, dropout, conv), skip_connection."""

    def __init__(self, in_ch: int, out_ch: int, temb: int, groups: int):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(groups, in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(temb, out_ch))
        self.out_layers = nn.Sequential(nn.GroupNorm(groups, out_ch), nn.SiLU(), nn.Identity(), nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip_connection = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample2D(nn.Module):
    """sd-scripts' SDXL names its stride-2 conv `op` (SD1's, in tiny.py, `conv`); the upsampler is SD1's."""

    def __init__(self, ch: int):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def _run(layers: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        if isinstance(layer, ResnetBlock2D):
            h = layer(h, emb)
        elif isinstance(layer, Transformer2DModel):
            h = layer(h, context)
        else:
            h = layer(h)
    return h


class SdxlUNet2DConditionModel(nn.Module):
    def __init__(self, cfg: SdxlConfig = SdxlConfig()):
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        temb = w[0] * 4
        context = sum(cfg.text_widths)

        def attention(level: int) -> list:
            depth = cfg.depths[level]
            return [Transformer2DModel(w[level], context, cfg.heads, cfg.groups, linear=True, depth=depth)] if depth else []

        self.time_embed = nn.Sequential(nn.Linear(w[0], temb), nn.SiLU(), nn.Linear(temb, temb))
        self.label_emb = nn.Sequential(nn.Sequential(nn.Linear(cfg.text_widths[1], temb), nn.SiLU(), nn.Linear(temb, temb)))
        self.input_blocks = nn.ModuleList([nn.ModuleList([nn.Conv2d(cfg.in_channels, w[0], 3, padding=1)])])
        skips = [w[0]]
        channels = w[0]
        for level in range(3):
            for _ in range(2):
                self.input_blocks.append(nn.ModuleList([ResnetBlock2D(channels, w[level], temb, cfg.groups)] + attention(level)))
                channels = w[level]
                skips.append(channels)
            if level < 2:
                self.input_blocks.append(nn.ModuleList([Downsample2D(channels)]))
                skips.append(channels)
        self.middle_block = nn.ModuleList(
            [ResnetBlock2D(channels, channels, temb, cfg.groups)] + attention(2) + [ResnetBlock2D(channels, channels, temb, cfg.groups)]
        )
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(3)):
            for j in range(3):
                layers = [ResnetBlock2D(channels + skips.pop(), w[level], temb, cfg.groups)] + attention(level)
                channels = w[level]
                if level > 0 and j == 2:
                    layers.append(Upsample2D(channels))
                self.output_blocks.append(nn.ModuleList(layers))
        self.out = nn.Sequential(nn.GroupNorm(cfg.groups, channels), nn.SiLU(), nn.Conv2d(channels, cfg.in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_features(timesteps, self.cfg.widths[0]).to(x.dtype)) + self.label_emb(y)
        h = x
        skips = []
        for layers in self.input_blocks:
            h = _run(layers, h, emb, context)
            skips.append(h)
        h = _run(self.middle_block, h, emb, context)
        for layers in self.output_blocks:
            h = _run(layers, torch.cat([h, skips.pop()], dim=1), emb, context)
        return self.out(h)


def build_tiny_sdxl(seed: int = 0, cfg: SdxlConfig = SdxlConfig()):
    """([text encoder 1, text encoder 2], unet) with random weights from `seed`."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        encoders = [CLIPTextModel(TextEncoderConfig(width=width)).eval() for width in cfg.text_widths]
        return encoders, SdxlUNet2DConditionModel(cfg).eval()
    finally:
        torch.random.set_rng_state(state)
