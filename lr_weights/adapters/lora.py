"""The adapter module: a LoRA (or LoCon, for k x k convs) that patches a base layer's forward.

Like sd-scripts we patch `forward` instead of replacing the layer, so base state-dict keys do not
change, and we build `lora_down`/`lora_up` with the same constructors and init calls in the same
order, so that the same seed gives the same tensors as upstream.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
from torch import nn

from lr_weights.adapters.functional import delta_weight
from lr_weights.adapters.fused import lora_linear


def layer_kind(layer: nn.Module) -> str:
    """'linear', 'conv1x1' or 'conv' (k x k) — the names the upstream figures use."""
    if isinstance(layer, nn.Conv2d) or type(layer).__name__ == "Conv2d":
        return "conv1x1" if tuple(layer.kernel_size) == (1, 1) else "conv"
    return "linear"


def max_rank(layer: nn.Module) -> int:
    """The largest rank a LoRA of this layer can use: beyond it up @ down cannot gain rank."""
    if layer_kind(layer) == "linear":
        return min(layer.in_features, layer.out_features)
    kh, kw = layer.kernel_size
    return min(layer.in_channels * kh * kw, layer.out_channels)


class LoRAModule(nn.Module):
    """out = base(x) + up(down(x)) * multiplier * alpha / dim, with the scale applied on the rank side."""

    def __init__(
        self,
        lora_name: str,
        base: nn.Module,
        dim: int,
        alpha: Optional[float],
        multiplier: float = 1.0,
        dropout: Optional[float] = None,
        rank_dropout: Optional[float] = None,
        module_dropout: Optional[float] = None,
        *,
        fa: bool = False,
    ):
        super().__init__()
        self.lora_name = lora_name
        # LoRA-FA: lora_down stays at its random init and only lora_up trains, so backward needs
        # the rank-r tensor instead of the full-width input (see docs/perf.md).
        self.fa = fa
        self.lora_dim = dim
        self.kind = layer_kind(base)
        self._make_factors(base, dim, fa)

        if isinstance(alpha, torch.Tensor):
            alpha = float(alpha.detach().float().item())
        alpha = float(dim) if alpha is None or alpha == 0 else float(alpha)
        self.scale = alpha / dim
        # On the CPU even under a meta-device context (`plan` on 12B models): tables read it.
        self.register_buffer("alpha", torch.tensor(alpha, device="cpu"))

        self.multiplier = multiplier
        self.dropout = dropout
        self.rank_dropout = rank_dropout
        self.module_dropout = module_dropout
        self.enabled = True
        # Held in a list so that nn.Module does not register the base layer as our child: its
        # weights must not appear in our state dict or parameters.
        self._base: List[nn.Module] = [base]
        self._base_forward = None

    def _make_factors(self, base: nn.Module, dim: int, fa: bool) -> None:
        """lora_down / lora_up, built and initialised with upstream's calls in upstream's order (the
        constructors draw from the RNG too), so that the same seed gives the same tensors."""
        if self.kind == "linear":
            self.lora_down = nn.Linear(base.in_features, dim, bias=False)
            self.lora_up = nn.Linear(dim, base.out_features, bias=False)
        else:
            self.lora_down = nn.Conv2d(base.in_channels, dim, base.kernel_size, base.stride, base.padding, bias=False)
            self.lora_up = nn.Conv2d(dim, base.out_channels, (1, 1), (1, 1), bias=False)

        # Same init as upstream (and microsoft/LoRA): a fresh adapter is an exact no-op. LoRA-FA
        # draws down as sd-scripts' networks.lora_fa does (the paper's normal init), so the same
        # seed gives the same frozen projection as there.
        if fa:
            fan_in = base.in_features if self.kind == "linear" else base.in_channels
            nn.init.normal_(self.lora_down.weight, std=math.sqrt(2.0 / (fan_in + dim)))
            self.lora_down.weight.requires_grad_(False)
        else:
            nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)

    def factor_pairs(self) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """(down weight, up weight) per part of ΔW, whose rows the parts' products are in order: one part
        here; FLUX's split_qkv modules have one per q/k/v(/MLP) part."""
        return [(self.lora_down.weight, self.lora_up.weight)]

    @property
    def base_layer(self) -> nn.Module:
        return self._base[0]

    def apply_to(self) -> None:
        """Route the base layer's forward through this module."""
        if self._base_forward is None:
            self._base_forward = self.base_layer.forward
            self.base_layer.forward = self.forward

    def restore(self) -> None:
        """Undo apply_to: the base layer computes exactly what it did before."""
        if self._base_forward is not None:
            del self.base_layer.forward  # drop the instance attribute; the class forward is back
            self._base_forward = None

    def requires_grad_(self, requires_grad: bool = True) -> "LoRAModule":
        super().requires_grad_(requires_grad)
        if self.fa:
            self.lora_down.weight.requires_grad_(False)
        return self

    def set_alpha(self, alpha: float) -> None:
        alpha = float(self.lora_dim) if alpha == 0 else float(alpha)
        self.alpha.fill_(alpha)
        self.scale = alpha / self.lora_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._base_forward(x)
        if not self.enabled:
            return out
        # The random draws happen in upstream's order (module, neuron, rank) so a seed means the same.
        if self.module_dropout is not None and self.training:
            if torch.rand(1) < self.module_dropout:
                return out

        scale = self.multiplier * self.scale
        if self.kind == "linear" and x.dim() in (2, 3) and not (self.training and (self.dropout is not None or self.rank_dropout is not None)):
            return lora_linear(out, x, self.lora_down.weight, self.lora_up.weight, scale)

        h = self.lora_down(x)
        if self.dropout is not None and self.training:
            h = nn.functional.dropout(h, p=self.dropout)

        if self.rank_dropout is not None and self.training:
            h, scale = self.drop_ranks(h, scale)

        # Scaling the rank-r tensor instead of the full-width output saves two full-width
        # multiplies per module (PERF.md); the result is the same up to rounding.
        if scale != 1.0:
            h = h * scale
        return out + self.lora_up(h)

    def drop_ranks(self, h: torch.Tensor, scale: float):
        """Upstream's rank dropout: one mask over the rank channels per sample, and the scale
        raised by 1/(1-p) as if the rank had shrunk. Returns (masked h, new scale)."""
        mask = torch.rand((h.size(0), self.lora_dim), device=h.device) > self.rank_dropout
        if h.dim() == 3:
            mask = mask.unsqueeze(1)
        elif h.dim() == 4:
            mask = mask.unsqueeze(-1).unsqueeze(-1)
        return h * mask, scale / (1.0 - self.rank_dropout)

    def delta_weight(self, multiplier: Optional[float] = None) -> torch.Tensor:
        """ΔW for merging: multiplier x scale x up @ down, float32, base weight shape."""
        multiplier = self.multiplier if multiplier is None else multiplier
        return delta_weight(self.lora_down.weight, self.lora_up.weight, multiplier * self.scale)
