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

A zero gradient is not upstream's "no gradient": momentum and weight decay would still move the
frozen rows (SGD without either would not). So each module keeps a snapshot of both factors and
the set of rank rows that took part in a forward with autograd on since that snapshot — over
gradient accumulation, the union of the slices drawn, i.e. exactly the rows that upstream hands
the optimizer. After an optimizer step every other row is put back to its snapshot and a new
snapshot is taken (`settle`), so frozen rows stay bit-identical for any optimizer. A step is seen
(no GPU sync on the training path) by a `torch.optim` step post-hook that the network registers
for every optimizer that holds the module's weights (any torch.optim.Optimizer subclass: AdamW, Lion, bitsandbytes'
8-bit ones, Prodigy ...); failing that, by the weights' autograd version counter at the next
forward; and `settle()` itself (run before the network's state_dict/save, max-norm, eval) also
compares values, for optimizers that write through raw pointers outside torch.optim. Loading a
state dict drops the snapshot, since loading is a legitimate change. Cost: one extra copy of the
adapter weights (the snapshot) and one in-place copy of the frozen rows per module per step.

What still differs from upstream with stateful optimizers: the optimizer's state is per tensor,
not per row. Frozen rows' moment estimates decay while they are frozen (upstream's stay as they
were), and Adam's bias correction uses the tensor's step count, which counts every step, where
upstream counts only the steps that trained that row. A row trained at every step so far (and any
row at the first step) gets exactly upstream's update; a row trained again after a pause, or for
the first time at a later step, gets a differently bias-corrected one. Upstream also draws a slice
(and rescales) in eval mode; here eval computes what the saved file computes, see below.

In eval mode (validation, inference) nothing is drawn and nothing is rescaled: the module computes
what the saved file computes anywhere a LoRA loads.
"""

from __future__ import annotations

import math
import random
from typing import List, Optional, Set, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from lr_weights.adapters.lora import LoRAModule


def draw_slice(dim: int, unit: int, rng: random.Random = None) -> Tuple[int, int]:
    """Upstream's draw: start = randint(0, dim-1) rounded down to a multiple of unit; (start, end)."""
    start = (rng or random).randint(0, dim - 1)
    start -= start % unit
    return start, start + unit


def _ranges_outside(starts: Set[int], unit: int, dim: int) -> List[Tuple[int, int]]:
    """The (start, end) index ranges of 0..dim not covered by the slices [s, s+unit) for s in starts."""
    ranges, begin = [], 0
    for start in sorted(starts):
        if start > begin:
            ranges.append((begin, start))
        begin = max(begin, start + unit)
    if begin < dim:
        ranges.append((begin, dim))
    return ranges


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
        self._snapshot: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self._trained: Set[int] = set()  # starts of the slices trained since the snapshot
        self._versions: Tuple[int, int] = (-1, -1)

    # ---- keeping frozen rows frozen (see the module docstring) -------------------------------

    @torch.no_grad()
    def settle(self, stepped: Optional[bool] = None) -> None:
        """Put back the rows that got no gradient since the snapshot, if the weights have moved.

        `stepped`: True when the caller knows an optimizer step happened (the step hook), False to
        only take a first snapshot; None finds out from the version counters and, failing that, by
        comparing values (a device sync: for explicit calls, not the per-forward path).
        """
        down, up = self.lora_down.weight, self.lora_up.weight
        snap = self._snapshot
        if snap is None:
            if stepped is False:  # the first training forward; before it there is nothing to settle
                self._take_snapshot()
            return
        if snap[0].device != down.device or snap[0].dtype != down.dtype or snap[1].dtype != up.dtype:
            self._take_snapshot()  # moved or cast by .to(): a fresh start
            return
        if stepped is None:
            stepped = self._versions != (down._version, up._version) or not (torch.equal(down, snap[0]) and torch.equal(up, snap[1]))
        if not stepped:
            return
        for begin, end in _ranges_outside(self._trained, self.unit, self.lora_dim):
            down.narrow(0, begin, end - begin).copy_(snap[0].narrow(0, begin, end - begin))
            up.narrow(1, begin, end - begin).copy_(snap[1].narrow(1, begin, end - begin))
        self._take_snapshot()

    def _take_snapshot(self, keep_trained: bool = False) -> None:
        down, up = self.lora_down.weight.detach(), self.lora_up.weight.detach()
        snap = self._snapshot
        if snap is None or snap[0].device != down.device or snap[0].dtype != down.dtype or snap[1].dtype != up.dtype:
            self._snapshot = (down.clone(), up.clone())
        else:
            snap[0].copy_(down)
            snap[1].copy_(up)
        if not keep_trained:
            self._trained.clear()
        self._versions = (down._version, up._version)

    def forget_snapshot(self) -> None:
        """Drop the snapshot: the weights were changed on purpose (loaded, rescaled)."""
        self._snapshot = None
        self._trained.clear()

    def _settle_if_moved(self) -> None:
        """The per-forward check: no device sync (a snapshot, or the version counters)."""
        down, up = self.lora_down.weight, self.lora_up.weight
        if self._snapshot is None:
            if self.training:
                self.settle(stepped=False)
        elif self._versions != (down._version, up._version):
            self.settle(stepped=True)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.forget_snapshot()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._settle_if_moved()
        if not self.training:
            return super().forward(x)
        out = self._base_forward(x)
        if not self.enabled:
            return out
        # Drawn before anything else, as upstream does, so seeded runs train the same slices.
        start, end = draw_slice(self.lora_dim, self.unit)
        if self.module_dropout is not None and torch.rand(1) < self.module_dropout:
            return out
        if torch.is_grad_enabled():
            self._trained.add(start)  # these rows get a gradient: the next step may move them

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
            h, scale = self.drop_ranks(h, scale)
        if scale != 1.0:
            h = h * scale
        return out + (F.linear(h, up) if self.kind == "linear" else F.conv2d(h, up))
