"""Small, runnable SD-shaped models for the demo, the tests and the benchmarks.

The module tree has sd-scripts' names and class names (Transformer2DModel, ResnetBlock2D,
CLIPAttention, ...) and its layer order, so LoRA names and block indices are those of a real SD1.x
U-Net and CLIP text encoder; the widths are whatever you ask for (real SD1.5 widths included, for
benchmarks). Random init, no downloads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class UNetConfig:
    widths: Tuple[int, ...] = (16, 32, 64, 64)  # SD1.5: (320, 640, 1280, 1280)
    layers_per_block: int = 2
    heads: int = 2  # SD1.5: 8
    context_dim: int = 32  # SD1.5: 768
    groups: int = 8  # GroupNorm groups; SD1.5: 32
    in_channels: int = 4


SD15_UNET = UNetConfig(widths=(320, 640, 1280, 1280), heads=8, context_dim=768, groups=32)


@dataclass(frozen=True)
class TextEncoderConfig:
    width: int = 32  # SD1.5: 768
    layers: int = 2  # SD1.5: 12
    heads: int = 2
    vocab: int = 1000
    max_length: int = 16


# ---- U-Net parts, named as in sd-scripts' SD1 U-Net ---------------------------------------------


class ResnetBlock2D(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, temb: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class CrossAttention(nn.Module):
    def __init__(self, dim: int, context_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, d = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, t.shape[1], self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context)))
        return self.to_out[0](out.transpose(1, 2).reshape(b, n, d))


class GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * 4), nn.Identity(), nn.Linear(dim * 4, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, context_dim: int, heads: int):
        super().__init__()
        self.attn1 = CrossAttention(dim, dim, heads)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nn.Module):
    """SD1's 1x1-conv projections by default; `linear` gives SD2/SDXL's Linear ones, `depth` SDXL's
    stacks of transformer blocks."""

    def __init__(self, dim: int, context_dim: int, heads: int, groups: int, linear: bool = False, depth: int = 1):
        super().__init__()
        self.linear = linear
        self.norm = nn.GroupNorm(groups, dim)
        self.proj_in = nn.Linear(dim, dim) if linear else nn.Conv2d(dim, dim, 1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(dim, context_dim, heads) for _ in range(depth)])
        self.proj_out = nn.Linear(dim, dim) if linear else nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.linear:
            hidden = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c))
        else:
            hidden = self.proj_in(self.norm(x)).permute(0, 2, 3, 1).reshape(b, h * w, c)
        for block in self.transformer_blocks:
            hidden = block(hidden, context)
        if self.linear:
            return x + self.proj_out(hidden).reshape(b, h, w, c).permute(0, 3, 1, 2)
        return x + self.proj_out(hidden.reshape(b, h, w, c).permute(0, 3, 1, 2))


class Downsample2D(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class CrossAttnDownBlock2D(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, temb: int, cfg: UNetConfig, attention: bool, downsample: bool):
        super().__init__()
        if attention:
            self.attentions = nn.ModuleList([Transformer2DModel(out_ch, cfg.context_dim, cfg.heads, cfg.groups) for _ in range(cfg.layers_per_block)])
        self.resnets = nn.ModuleList([ResnetBlock2D(in_ch if i == 0 else out_ch, out_ch, temb, cfg.groups) for i in range(cfg.layers_per_block)])
        if downsample:
            self.downsamplers = nn.ModuleList([Downsample2D(out_ch)])

    def forward(self, x, emb, context):
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, emb)
            if hasattr(self, "attentions"):
                x = self.attentions[i](x, context)
            skips.append(x)
        if hasattr(self, "downsamplers"):
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class CrossAttnUpBlock2D(nn.Module):
    def __init__(self, in_chs: Sequence[int], out_ch: int, temb: int, cfg: UNetConfig, attention: bool, upsample: bool):
        super().__init__()
        if attention:
            self.attentions = nn.ModuleList([Transformer2DModel(out_ch, cfg.context_dim, cfg.heads, cfg.groups) for _ in in_chs])
        self.resnets = nn.ModuleList([ResnetBlock2D(c, out_ch, temb, cfg.groups) for c in in_chs])
        if upsample:
            self.upsamplers = nn.ModuleList([Upsample2D(out_ch)])

    def forward(self, x, skips, emb, context):
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), emb)
            if hasattr(self, "attentions"):
                x = self.attentions[i](x, context)
        if hasattr(self, "upsamplers"):
            x = self.upsamplers[0](x)
        return x


class UNetMidBlock2DCrossAttn(nn.Module):
    def __init__(self, ch: int, temb: int, cfg: UNetConfig):
        super().__init__()
        self.attentions = nn.ModuleList([Transformer2DModel(ch, cfg.context_dim, cfg.heads, cfg.groups)])
        self.resnets = nn.ModuleList([ResnetBlock2D(ch, ch, temb, cfg.groups), ResnetBlock2D(ch, ch, temb, cfg.groups)])

    def forward(self, x, emb, context):
        x = self.resnets[0](x, emb)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, emb)


class TimestepEmbedding(nn.Module):
    def __init__(self, ch: int, temb: int):
        super().__init__()
        self.linear_1 = nn.Linear(ch, temb)
        self.linear_2 = nn.Linear(temb, temb)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(t)))


class UNet2DConditionModel(nn.Module):
    """An SD1.x-layout U-Net: 4 levels, cross-attention in the first three down / last three up."""

    def __init__(self, cfg: UNetConfig = UNetConfig()):
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        temb = w[0] * 4
        self.conv_in = nn.Conv2d(cfg.in_channels, w[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(w[0], temb)
        self.down_blocks = nn.ModuleList(
            [CrossAttnDownBlock2D(w[max(i - 1, 0)], w[i], temb, cfg, attention=i < 3, downsample=i < 3) for i in range(4)]
        )
        # Skip channels per up block, consumed from the deepest down block back to conv_in.
        skip_chs = [w[0]] + [w[i] for i in range(4) for _ in range(cfg.layers_per_block + (1 if i < 3 else 0))]
        self.up_blocks = nn.ModuleList()
        prev = w[3]
        for i in range(4):
            out_ch = w[3 - i]
            in_chs = []
            for _ in range(cfg.layers_per_block + 1):
                in_chs.append(prev + skip_chs.pop())
                prev = out_ch
            self.up_blocks.append(CrossAttnUpBlock2D(in_chs, out_ch, temb, cfg, attention=i > 0, upsample=i < 3))
        self.mid_block = UNetMidBlock2DCrossAttn(w[3], temb, cfg)
        self.conv_norm_out = nn.GroupNorm(cfg.groups, w[0])
        self.conv_out = nn.Conv2d(w[0], cfg.in_channels, 3, padding=1)

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        emb = self.time_embedding(timestep_features(timesteps, self.cfg.widths[0]).to(sample.dtype))
        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, emb, encoder_hidden_states)
            skips += block_skips
        x = self.mid_block(x, emb, encoder_hidden_states)
        for block in self.up_blocks:
            x = block(x, skips, emb, encoder_hidden_states)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


def timestep_features(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


# ---- text encoder, named as transformers' CLIPTextModel --------------------------------------


class CLIPAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)), is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class CLIPMLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc1 = nn.Linear(width, width * 4)
        self.fc2 = nn.Linear(width * 4, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        return self.fc2(h * torch.sigmoid(1.702 * h))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.self_attn = CLIPAttention(width, heads)
        self.layer_norm1 = nn.LayerNorm(width)
        self.mlp = CLIPMLP(width)
        self.layer_norm2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(cfg.width, cfg.heads) for _ in range(cfg.layers)])


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab, cfg.width)
        self.position_embedding = nn.Embedding(cfg.max_length, cfg.width)


class CLIPTextTransformer(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.embeddings = CLIPTextEmbeddings(cfg)
        self.encoder = CLIPEncoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.width)


class CLIPTextModel(nn.Module):
    def __init__(self, cfg: TextEncoderConfig = TextEncoderConfig()):
        super().__init__()
        self.cfg = cfg
        self.text_model = CLIPTextTransformer(cfg)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        tm = self.text_model
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = tm.embeddings.token_embedding(input_ids) + tm.embeddings.position_embedding(positions)[None]
        for layer in tm.encoder.layers:
            x = layer(x)
        return tm.final_layer_norm(x)


def build_tiny_sd(seed: int = 0, unet: UNetConfig = UNetConfig(), text: Optional[TextEncoderConfig] = None):
    """(text_encoder, unet) with random weights from `seed`; the TE width follows the context dim."""
    text = text or TextEncoderConfig(width=unet.context_dim)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return CLIPTextModel(text).eval(), UNet2DConditionModel(unet).eval()
    finally:
        torch.random.set_rng_state(generator_state)


def tiny_token_ids(prompts: Sequence[str], cfg: TextEncoderConfig) -> torch.Tensor:
    """Token ids for the tiny text encoders, a stand-in for CLIP's tokenizer: BOS (vocab-2), one id
    per character, EOS (vocab-1), padded with EOS to cfg.max_length, as CLIP pads. The models are
    random, so only determinism and distinct prompts giving distinct ids matter."""
    bos, eos = cfg.vocab - 2, cfg.vocab - 1
    rows = []
    for prompt in prompts:
        ids = [bos] + [ord(c) % bos for c in prompt][: cfg.max_length - 2] + [eos]
        rows.append(ids + [eos] * (cfg.max_length - len(ids)))
    return torch.tensor(rows, dtype=torch.long)
