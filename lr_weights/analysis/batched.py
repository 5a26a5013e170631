"""Per-block ΔW added beside the layers, batch row by batch row: several configurations per forward.

The layers keep their base weights W0. A forward hook on each adapted layer adds the layer's ΔW·x
(LoRA factors: up·(down·x)·scale; LyCORIS: the dense ΔW) to the batch rows whose configuration has
the layer's block on, so batch row r computes f(W0 + Σ_{blocks on in r} ΔW_block). The full LoRA,
each block ablated and each block alone then run side by side in one forward; no weight is written.

Factored ΔW is computed for every row and multiplied by the row's 0/1 mask: a row's result then
never depends on which other rows share its forward (x·0 is exactly 0), so a block whose ΔW is 0
changes nothing bit for bit, as with merged weights. Dense ΔW costs a full matmul, so it runs only
on the rows that have the block on.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from lr_weights.analysis.deltas import LoraDeltas, ModuleDelta


def _conv(layer: nn.Conv2d, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, kernel, None, layer.stride, layer.padding, layer.dilation, layer.groups)


def delta_output(layer: nn.Module, module: ModuleDelta, x: torch.Tensor) -> torch.Tensor:
    """ΔW applied to the layer's input x (no base output, no bias): what merging ΔW adds to the output."""
    conv = isinstance(layer, nn.Conv2d)
    if module.dense is not None:
        return _conv(layer, x, module.dense) if conv else F.linear(x, module.dense)
    if conv:
        # LoCon: down is a k x k conv with the layer's stride and padding, up a 1x1 conv.
        down = module.down if module.down.dim() == 4 else module.down[:, :, None, None]
        up = module.up if module.up.dim() == 4 else module.up[:, :, None, None]
        out = F.conv2d(_conv(layer, x, down), up)
    else:
        out = F.linear(F.linear(x, module.down.flatten(1)), module.up.flatten(1))
    return out if module.scale == 1.0 else out * module.scale


class BlockRowDeltas:
    """Forward hooks that add each block's ΔW to the batch rows that have the block on.

    Used as a context manager around the forwards; `select(configurations)` before each forward
    names the blocks on for every batch row (one set of block names per row).
    """

    def __init__(self, layers: Mapping[str, nn.Module], deltas: LoraDeltas, blocks: Sequence[str]):
        wanted = set(blocks)
        self._modules: List[tuple] = []
        for module in deltas.modules:
            if module.row in wanted:
                layer = layers[module.name]
                weight = layer.weight
                # In the layer's dtype, so x·ΔW rounds as the layer's own matmul does; the scale
                # folded into up (one pass less over the output).
                cast = lambda t: None if t is None else t.to(weight.device, weight.dtype)  # noqa: E731
                up = None if module.up is None else module.up.to(weight.device) * module.scale
                moved = ModuleDelta(module.name, module.row, module.index, cast(module.down), cast(up), 1.0, cast(module.dense), cast(module.bias))
                self._modules.append((layer, moved))
        self._rows = 0
        self._masks: Dict[str, torch.Tensor] = {}  # block -> (rows,) 0/1 in the layers' dtype
        self._on_rows: Dict[str, Optional[torch.Tensor]] = {}  # block -> indices of rows with it on; None: none
        self._handles: List = []

    def __enter__(self) -> "BlockRowDeltas":
        for layer, module in self._modules:
            self._handles.append(layer.register_forward_hook(self._hook(layer, module)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def select(self, configurations: Sequence[frozenset]) -> None:
        """Batch row r of the next forward has exactly the blocks configurations[r] on."""
        self._rows = len(configurations)
        self._masks, self._on_rows = {}, {}
        for layer, module in self._modules:
            block = module.row
            if block in self._masks:
                continue
            on = [r for r, blocks in enumerate(configurations) if block in blocks]
            device, dtype = layer.weight.device, layer.weight.dtype
            self._masks[block] = torch.tensor([1.0 if block in blocks else 0.0 for blocks in configurations], dtype=dtype).to(device)
            self._on_rows[block] = torch.tensor(on, dtype=torch.long).to(device) if on else None

    def _hook(self, layer: nn.Module, module: ModuleDelta):
        bias = None if module.bias is None else module.bias.view([-1, 1, 1] if isinstance(layer, nn.Conv2d) else [-1])

        def add_delta(layer: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
            x = inputs[0]
            if x.shape[0] != self._rows:
                raise RuntimeError(f"analyze: layer {module.name} got a batch of {x.shape[0]} rows, expected {self._rows}: its model does not keep the batch first")
            on = self._on_rows[module.row]
            if on is None:
                return output
            if module.dense is not None:
                part = delta_output(layer, module, x.index_select(0, on))
                return output.index_add(0, on, part if bias is None else part + bias)
            change = delta_output(layer, module, x)
            change = change if bias is None else change + bias
            return torch.addcmul(output, change, self._masks[module.row].view([-1] + [1] * (output.dim() - 1)))

        return add_delta
