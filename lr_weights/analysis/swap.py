"""Per-block ΔW merged into the model's own weights, swapped in place.

Every state is W0 + Σ_{rows on} ΔW_row, written into the layers' existing weight tensors (no
module is created or replaced, so the model runs at its own speed). Turning one row on or off
rewrites only that row's layers; W0 is kept per touched layer, so switching everything off gives
back the original weights bit for bit.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Set, Tuple

import torch
from torch import nn

from lr_weights.analysis.deltas import LoraDeltas, ModuleDelta


class MergedWeights:
    def __init__(self, layers: Mapping[str, nn.Module], deltas: LoraDeltas, rows: Iterable[str]):
        self._rows: Dict[str, List[Tuple[nn.Module, torch.Tensor, torch.Tensor, ModuleDelta]]] = {}
        self._on: Set[str] = set()
        wanted = set(rows)
        for module in deltas.modules:
            if module.row not in wanted:
                continue
            layer = layers[module.name]
            weight = layer.weight.detach()
            bias = layer.bias.detach() if getattr(layer, "bias", None) is not None else None
            entry = (layer, weight.clone(), None if bias is None else bias.clone(), module.to(weight.device))
            self._rows.setdefault(module.row, []).append(entry)

    @property
    def on(self) -> frozenset:
        return frozenset(self._on)

    def set(self, rows: Iterable[str]) -> None:
        """Make exactly `rows` merged (the others at W0); rewrites only rows whose state changes."""
        target = set(rows)
        with torch.no_grad():
            for row in (self._on ^ target):
                for layer, weight0, bias0, module in self._rows.get(row, ()):
                    if row in target:
                        # Summed in float32 at least (float64 stays float64: a float64 model merges like one).
                        compute = torch.promote_types(weight0.dtype, torch.float32)
                        layer.weight.copy_(weight0.to(compute) + module.weight(weight0.device))
                        if module.bias is not None and bias0 is not None:
                            layer.bias.copy_(bias0.to(compute) + module.bias)
                    else:
                        layer.weight.copy_(weight0)
                        if bias0 is not None:
                            layer.bias.copy_(bias0)
        self._on = target

    def restore(self) -> None:
        self.set(())
