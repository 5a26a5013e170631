"""The DyLoRA adapter: a LoRA whose rank is trained one random slice of `unit` rows per step.

sd-scripts' `networks.dylora` rule, kept: in training, every forward draws
`b = random.randint(0, dim - 1)` rounded down to a multiple of `unit` (Python's `random`, so a
seeded run draws the same slices as upstream), only rows `b .. b+unit` of `lora_down` and the same
columns of `lora_up` get a gradient, all rows take part in the forward, and the adapter output is
scaled by `sqrt(dim / (b + unit))`.

Upstream keeps every rank row as its own parameter (2 x dim tensors per module), toggles
`requires_grad` on each and concatenates them on every forward. Here each factor is one tensor:
`lora_down.weight` / `lora_up.weight`, exactly the keys and shapes of a plain LoRA file. The
forward re-assembles each factor from three slices, detaching the two that are frozen this step,
so autograd hands the optimizer a gradient that is zero outside the trained slice.

In eval mode (validation, inference) nothing is drawn and nothing is rescaled: the module computes
what the saved file computes anywhere a LoRA loads.
"""

from __future__ import annotations

import math
import random
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .modules import LoRAModule


def draw_slice(dim: int, unit: int, rng: random.Random = None) -> Tuple[int, int]:
    """Upstream's draw: start = randint(0, dim-1) rounded down to a multiple of unit; (start, end)."""
    start = (rng or random).randint(0, dim - 1)
    start -= start % unit
    return start, start + unit


def slice_trainable(weight: torch.Tensor, start: int, end: int, dim: int) -> torch.Tensor:
    """`weight` with gradient flowing only into the index range start:end of dimension `dim`."""
    if start == 0 and end == weight.shape[dim]:
        return weight
    parts = (weight.narrow(dim, 0, start).detach(), weight.narrow(dim, start, end - start), weight.narrow(dim, end, weight.shape[dim] - end).detach())
    return torch.cat([p for p in parts if p.shape[dim] > 0], dim=dim)


class DyLoRAModule(LoRAModule):
    """A LoRA module trained with DyLoRA's rank slices; saved and merged as a plain LoRA."""

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
        unit: int = 1,
    ):
        if unit < 1 or dim % unit != 0:
            raise ValueError(f"{lora_name}: dim {dim} is not a multiple of unit {unit}")
        # LoRAModule builds nn.Linear/nn.Conv2d factors, whose constructors draw from the RNG.
        # Upstream DyLoRA starts from zeros and draws once per rank row, so we build the layers with
        # the RNG state put back afterwards and then draw exactly what upstream draws.
        with torch.random.fork_rng(devices=[]):
            super().__init__(lora_name, base, dim, alpha, multiplier, dropout, rank_dropout, module_dropout)
        # One draw over (dim, in[, k, k]) equals upstream's dim draws over (1, in[, k, k]): the CPU
        # generator fills a tensor serially and the bound depends on fan_in, the same for both.
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_up.weight)
        self.unit = unit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        out = self._base_forward(x)
        if not self.enabled:
            return out
        # Drawn before anything else, as upstream does, so seeded runs train the same slices.
        start, end = draw_slice(self.lora_dim, self.unit)
        if self.module_dropout is not None and torch.rand(1) < self.module_dropout:
            return out

        down = slice_trainable(self.lora_down.weight, start, end, 0)
        up = slice_trainable(self.lora_up.weight, start, end, 1)
        if self.kind == "linear":
            h = F.linear(x, down)
        else:
            h = F.conv2d(x, down, None, self.lora_down.stride, self.lora_down.padding)
        if self.dropout is not None:
            h = F.dropout(h, p=self.dropout)

        scale = self.multiplier * self.scale * math.sqrt(self.lora_dim / end)
        if self.rank_dropout is not None:
            mask = torch.rand((h.size(0), self.lora_dim), device=h.device) > self.rank_dropout
            if h.dim() == 3:
                mask = mask.unsqueeze(1)
            elif h.dim() == 4:
                mask = mask.unsqueeze(-1).unsqueeze(-1)
            h = h * mask
            scale = scale / (1.0 - self.rank_dropout)
        if scale != 1.0:
            h = h * scale
        return out + (F.linear(h, up) if self.kind == "linear" else F.conv2d(h, up))
