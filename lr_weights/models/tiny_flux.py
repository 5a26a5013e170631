"""Small, runnable FLUX-shaped models for the tests and benchmarks (no downloads, random init).

The module trees have sd-scripts' names and class names (`Flux`, `DoubleStreamBlock`,
`SingleStreamBlock`, `Modulation`, `SelfAttention`, `MLPEmbedder`, ...; transformers' CLIPTextModel
and T5EncoderModel layouts for the encoders) in sd-scripts' layer order, so LoRA names, block
indices and creation order are those of FLUX.1; the widths are whatever you ask for. The forward
is a compact FLUX-like computation written for these tests (joint attention over text and image
tokens with QK-RMSNorm and adaLN modulation): enough to train adapters through every adapted
layer. With `axes_dim` set it adds FLUX's rotary positions (text at 0, image tokens on their grid),
which is how `lr-weights analyze` runs a FLUX.1 flow model file (flux_config_of_state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from lr_weights.models.tiny import CLIPTextModel, TextEncoderConfig, timestep_features


@dataclass(frozen=True)
class FluxConfig:
    hidden: int = 32  # FLUX.1: 3072
    heads: int = 2  # FLUX.1: 24
    mlp_ratio: float = 4.0
    depth: int = 19  # double blocks
    depth_single: int = 38
    in_channels: int = 16  # FLUX.1: 64 (packed latents)
    vec_in_dim: int = 24  # FLUX.1: 768 (CLIP-L pooled)
    context_in_dim: int = 20  # FLUX.1: 4096 (T5-XXL)
    guidance_embed: bool = True  # dev: True, schnell: False
    qkv_bias: bool = True
    # Rotary positions per axis (FLUX.1: (16, 56, 56), summing to the head width; theta 10000).
    # None: no positions, the compact forward the training tests use.
    axes_dim: Optional[Tuple[int, ...]] = None
    theta: int = 10000


# ---- flow model, named as sd-scripts' library/flux_models.py --------------------------------


class MLPEmbedder(nn.Module):
    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden, bias=True)
        self.silu = nn.SiLU()
        self.out_layer = nn.Linear(hidden, hidden, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(self.silu(self.in_layer(x)))


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # At least float32, as FLUX (half inputs); float64 stays float64, so a float64 model rounds
        # like one (the tests compare whole models in float64, tests/tolerances.py).
        compute = torch.promote_types(x.dtype, torch.float32)
        return x * torch.rsqrt(x.to(compute).pow(2).mean(-1, keepdim=True) + 1e-6).to(x.dtype) * self.scale


class QKNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.query_norm = RMSNorm(dim)
        self.key_norm = RMSNorm(dim)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.norm = QKNorm(dim // heads)
        self.proj = nn.Linear(dim, dim)


class Modulation(nn.Module):
    def __init__(self, dim: int, double: bool):
        super().__init__()
        self.parts = 6 if double else 3
        self.lin = nn.Linear(dim, self.parts * dim, bias=True)

    def forward(self, vec: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return self.lin(F.silu(vec))[:, None, :].chunk(self.parts, dim=-1)


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, d = t.shape
    return t.reshape(b, n, heads, d // heads).transpose(1, 2)


def rotary_angles(positions: torch.Tensor, axes_dim: Tuple[int, ...], theta: int) -> torch.Tensor:
    """(tokens, head_dim / 2) rotation angles: axis a's pairs turn by position_a x theta^(-2i/dim_a)."""
    parts = []
    for axis, dim in enumerate(axes_dim):
        frequencies = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)
        parts.append(positions[:, axis, None].double() * frequencies[None])
    return torch.cat(parts, dim=-1)


def apply_rotary(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[2i], x[2i+1]) of the head dimension by its angle (computed in float32)."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    cos, sin = angles.cos().float(), angles.sin().float()
    first = cos * pairs[..., 0] - sin * pairs[..., 1]
    second = sin * pairs[..., 0] + cos * pairs[..., 1]
    return torch.stack([first, second], dim=-1).reshape(x.shape).to(x.dtype)


def _joint_attention(q, k, v, norm: QKNorm, angles: Optional[torch.Tensor] = None) -> torch.Tensor:
    q, k = norm.query_norm(q), norm.key_norm(k)
    if angles is not None:
        q, k = apply_rotary(q, angles), apply_rotary(k, angles)
    out = F.scaled_dot_product_attention(q, k, v)
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d)


class DoubleStreamBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_ratio: float, qkv_bias: bool):
        super().__init__()
        mlp = int(hidden * mlp_ratio)
        self.heads = heads
        self.img_mod = Modulation(hidden, double=True)
        self.img_norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.img_attn = SelfAttention(hidden, heads, qkv_bias)
        self.img_norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.img_mlp = nn.Sequential(nn.Linear(hidden, mlp, bias=True), nn.GELU(approximate="tanh"), nn.Linear(mlp, hidden, bias=True))
        self.txt_mod = Modulation(hidden, double=True)
        self.txt_norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.txt_attn = SelfAttention(hidden, heads, qkv_bias)
        self.txt_norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.txt_mlp = nn.Sequential(nn.Linear(hidden, mlp, bias=True), nn.GELU(approximate="tanh"), nn.Linear(mlp, hidden, bias=True))

    def forward(self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor, angles: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        i_shift1, i_scale1, i_gate1, i_shift2, i_scale2, i_gate2 = self.img_mod(vec)
        t_shift1, t_scale1, t_gate1, t_shift2, t_scale2, t_gate2 = self.txt_mod(vec)
        img_qkv = self.img_attn.qkv((1 + i_scale1) * self.img_norm1(img) + i_shift1)
        txt_qkv = self.txt_attn.qkv((1 + t_scale1) * self.txt_norm1(txt) + t_shift1)
        q, k, v = (torch.cat([_heads(t, self.heads), _heads(i, self.heads)], dim=2) for t, i in zip(txt_qkv.chunk(3, -1), img_qkv.chunk(3, -1)))
        attn = _joint_attention(q, k, v, self.img_attn.norm, angles)
        txt_attn, img_attn = attn[:, : txt.shape[1]], attn[:, txt.shape[1] :]
        img = img + i_gate1 * self.img_attn.proj(img_attn)
        img = img + i_gate2 * self.img_mlp((1 + i_scale2) * self.img_norm2(img) + i_shift2)
        txt = txt + t_gate1 * self.txt_attn.proj(txt_attn)
        txt = txt + t_gate2 * self.txt_mlp((1 + t_scale2) * self.txt_norm2(txt) + t_shift2)
        return img, txt


class SingleStreamBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.hidden_size = hidden
        self.mlp_hidden_dim = int(hidden * mlp_ratio)
        self.linear1 = nn.Linear(hidden, hidden * 3 + self.mlp_hidden_dim)
        self.linear2 = nn.Linear(hidden + self.mlp_hidden_dim, hidden)
        self.norm = QKNorm(hidden // heads)
        self.pre_norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp_act = nn.GELU(approximate="tanh")
        self.modulation = Modulation(hidden, double=False)

    def forward(self, x: torch.Tensor, vec: torch.Tensor, angles: Optional[torch.Tensor] = None) -> torch.Tensor:
        shift, scale, gate = self.modulation(vec)
        fused = self.linear1((1 + scale) * self.pre_norm(x) + shift)
        q, k, v, mlp = torch.split(fused, [self.hidden_size] * 3 + [self.mlp_hidden_dim], dim=-1)
        attn = _joint_attention(_heads(q, self.heads), _heads(k, self.heads), _heads(v, self.heads), self.norm, angles)
        return x + gate * self.linear2(torch.cat([attn, self.mlp_act(mlp)], dim=-1))


class LastLayer(nn.Module):
    def __init__(self, hidden: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden, bias=True))

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(vec)[:, None, :].chunk(2, dim=-1)
        return self.linear((1 + scale) * self.norm_final(x) + shift)


def flux_config_of_state(state, path: str = "the checkpoint") -> FluxConfig:
    """The FluxConfig of a flow-model state dict (BFL names), every size read off the tensors; FLUX.1's
    rotary axes when the head width is FLUX.1's 128, none otherwise (the tiny models)."""
    try:
        hidden, in_channels = state["img_in.weight"].shape
        head = int(state["double_blocks.0.img_attn.norm.query_norm.scale"].shape[0])
        mlp = int(state["double_blocks.0.img_mlp.0.weight"].shape[0])
    except KeyError as error:
        raise ValueError(f"{path} has no {error.args[0]}: expected a FLUX.1 flow model (BFL names: img_in, double_blocks.N, ...)") from None
    count = lambda prefix: len({k.split(".")[1] for k in state if k.startswith(prefix)})  # noqa: E731
    return FluxConfig(
        hidden=int(hidden),
        heads=int(hidden) // head,
        mlp_ratio=mlp / int(hidden),
        depth=count("double_blocks."),
        depth_single=count("single_blocks."),
        in_channels=int(in_channels),
        vec_in_dim=int(state["vector_in.in_layer.weight"].shape[1]),
        context_in_dim=int(state["txt_in.weight"].shape[1]),
        guidance_embed="guidance_in.in_layer.weight" in state,
        qkv_bias="double_blocks.0.img_attn.qkv.bias" in state,
        axes_dim=(16, 56, 56) if head == 128 else None,
    )


class EmbedND(nn.Module):
    """Holds no weights (FLUX's RoPE frequencies); kept for the module tree's sake."""


class Flux(nn.Module):
    def __init__(self, cfg: FluxConfig = FluxConfig()):
        super().__init__()
        self.cfg = cfg
        self.pe_embedder = EmbedND()
        self.img_in = nn.Linear(cfg.in_channels, cfg.hidden, bias=True)
        self.time_in = MLPEmbedder(256, cfg.hidden)
        self.vector_in = MLPEmbedder(cfg.vec_in_dim, cfg.hidden)
        self.guidance_in = MLPEmbedder(256, cfg.hidden) if cfg.guidance_embed else nn.Identity()
        self.txt_in = nn.Linear(cfg.context_in_dim, cfg.hidden)
        self.double_blocks = nn.ModuleList([DoubleStreamBlock(cfg.hidden, cfg.heads, cfg.mlp_ratio, cfg.qkv_bias) for _ in range(cfg.depth)])
        self.single_blocks = nn.ModuleList([SingleStreamBlock(cfg.hidden, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth_single)])
        self.final_layer = LastLayer(cfg.hidden, cfg.in_channels)

    def rotary_angles(self, text_tokens: int, image_tokens: int, device) -> torch.Tensor:
        """FLUX's positions: text tokens at (0, 0, 0), image tokens at (0, row, column) of a square grid."""
        side = int(round(image_tokens**0.5))
        rows = torch.arange(side, device=device).repeat_interleave(side)
        columns = torch.arange(side, device=device).repeat(side)
        image = torch.stack([torch.zeros_like(rows), rows, columns], dim=-1)
        positions = torch.cat([torch.zeros(text_tokens, 3, dtype=image.dtype, device=device), image])
        return rotary_angles(positions, self.cfg.axes_dim, self.cfg.theta)

    def forward(self, img: torch.Tensor, txt: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor, guidance: Optional[torch.Tensor] = None) -> torch.Tensor:
        # The sinusoidal features are float32; the model's dtype from there on (as tiny.py's U-Net).
        vec = self.time_in(timestep_features(timesteps * 1000, 256).to(img.dtype)) + self.vector_in(y)
        if self.cfg.guidance_embed:
            vec = vec + self.guidance_in(timestep_features((guidance if guidance is not None else timesteps) * 1000, 256).to(img.dtype))
        angles = self.rotary_angles(txt.shape[1], img.shape[1], img.device) if self.cfg.axes_dim else None
        img = self.img_in(img)
        txt = self.txt_in(txt)
        for block in self.double_blocks:
            img, txt = block(img, txt, vec, angles)
        x = torch.cat([txt, img], dim=1)
        for block in self.single_blocks:
            x = block(x, vec, angles)
        return self.final_layer(x[:, txt.shape[1] :], vec)


# ---- T5-XXL encoder, named as transformers' T5EncoderModel (gated-GELU FFN, as T5 v1.1) -------


@dataclass(frozen=True)
class T5Config:
    width: int = 20  # T5-XXL: 4096
    ff: int = 40  # T5-XXL: 10240
    heads: int = 2
    layers: int = 2  # T5-XXL: 24
    vocab: int = 100
    buckets: int = 8


class T5LayerNorm(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class T5Attention(nn.Module):
    def __init__(self, cfg: T5Config, relative_bias: bool):
        super().__init__()
        self.heads = cfg.heads
        self.q = nn.Linear(cfg.width, cfg.width, bias=False)
        self.k = nn.Linear(cfg.width, cfg.width, bias=False)
        self.v = nn.Linear(cfg.width, cfg.width, bias=False)
        self.o = nn.Linear(cfg.width, cfg.width, bias=False)
        if relative_bias:
            self.relative_attention_bias = nn.Embedding(cfg.buckets, cfg.heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.scaled_dot_product_attention(_heads(self.q(x), self.heads), _heads(self.k(x), self.heads), _heads(self.v(x), self.heads))
        b, h, n, d = out.shape
        return self.o(out.transpose(1, 2).reshape(b, n, h * d))


class T5LayerSelfAttention(nn.Module):
    def __init__(self, cfg: T5Config, relative_bias: bool):
        super().__init__()
        self.SelfAttention = T5Attention(cfg, relative_bias)
        self.layer_norm = T5LayerNorm(cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.SelfAttention(self.layer_norm(x))


class T5DenseGatedActDense(nn.Module):
    def __init__(self, cfg: T5Config):
        super().__init__()
        self.wi_0 = nn.Linear(cfg.width, cfg.ff, bias=False)
        self.wi_1 = nn.Linear(cfg.width, cfg.ff, bias=False)
        self.wo = nn.Linear(cfg.ff, cfg.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x))


class T5LayerFF(nn.Module):
    def __init__(self, cfg: T5Config):
        super().__init__()
        self.DenseReluDense = T5DenseGatedActDense(cfg)
        self.layer_norm = T5LayerNorm(cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.DenseReluDense(self.layer_norm(x))


class T5Block(nn.Module):
    def __init__(self, cfg: T5Config, relative_bias: bool):
        super().__init__()
        self.layer = nn.ModuleList([T5LayerSelfAttention(cfg, relative_bias), T5LayerFF(cfg)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x)
        return x


class T5Stack(nn.Module):
    def __init__(self, cfg: T5Config, shared: nn.Embedding):
        super().__init__()
        self.embed_tokens = shared
        self.block = nn.ModuleList([T5Block(cfg, relative_bias=(i == 0)) for i in range(cfg.layers)])
        self.final_layer_norm = T5LayerNorm(cfg.width)


class T5EncoderModel(nn.Module):
    def __init__(self, cfg: T5Config = T5Config()):
        super().__init__()
        self.shared = nn.Embedding(cfg.vocab, cfg.width)
        self.encoder = T5Stack(cfg, self.shared)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.shared(input_ids)
        for block in self.encoder.block:
            x = block(x)
        return self.encoder.final_layer_norm(x)


def build_tiny_flux(seed: int = 0, cfg: FluxConfig = FluxConfig(), chroma: bool = False, device: str = "cpu"):
    """([CLIP-L stand-in or None (Chroma), T5 stand-in], flux) with random weights from `seed`.

    The CLIP-L stand-in's width is cfg.vec_in_dim and the T5's cfg.context_in_dim, as in FLUX.1
    where the pooled CLIP output feeds vector_in and the T5 sequence feeds txt_in.
    """
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        clip = None if chroma else CLIPTextModel(TextEncoderConfig(width=cfg.vec_in_dim, layers=2, heads=2)).eval().to(device)
        t5 = T5EncoderModel(T5Config(width=cfg.context_in_dim, ff=2 * cfg.context_in_dim)).eval().to(device)
        flux = Flux(cfg).eval().to(device)
        return [clip, t5], flux
    finally:
        torch.random.set_rng_state(state)
