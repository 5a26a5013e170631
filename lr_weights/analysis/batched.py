"""Per-block ΔW added beside the layers, batch row by batch row: several configurations per forward.

The layers keep their base weights W0. A forward hook on each adapted layer adds the layer's ΔW·x
(LoRA factors: up·(down·x)·scale; LyCORIS: the dense ΔW) to the batch rows whose configuration has
the layer's block on, so batch row r computes f(W0 + Σ_{blocks on in r} ΔW_block). The full LoRA,
each block ablated and each block alone then run side by side in one forward; no weight is written.

Factored ΔW is computed for every row, the row's 0/1 mask applied to the rank-r activations, and
accumulated into the output by one fused GEMM: a row's result then never depends on which other
rows share its forward (0·up is exactly 0), so a block whose ΔW is 0 changes nothing bit for bit, as
with merged weights. Dense ΔW costs a full matmul, so it runs only on the rows that have the block on.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from lr_weights.analysis.deltas import LoraDeltas, ModuleDelta


def _conv(layer: nn.Conv2d, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, kernel, None, layer.stride, layer.padding, layer.dilation, layer.groups)


def dense_output(layer: nn.Module, dense: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """ΔW·x for a dense ΔW (no base output, no bias): what merging ΔW adds to the layer's output."""
    return _conv(layer, x, dense) if isinstance(layer, nn.Conv2d) else F.linear(x, dense)


def add_factored_(layer: nn.Module, module: ModuleDelta, x: torch.Tensor, output: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """output + up·(mask·(down·x)), the 0/1 row mask applied to the rank-r activations; where the
    output's layout allows, accumulated in place by one fused GEMM (no output-sized temporary).
    `module.up` already holds the scale."""
    up = module.up.flatten(1)  # (out, r)
    if isinstance(layer, nn.Conv2d):
        # LoCon: down is a k x k conv with the layer's stride and padding, up a 1x1 conv.
        down = module.down if module.down.dim() == 4 else module.down[:, :, None, None]
        h = _conv(layer, x, down) * mask.view(-1, 1, 1, 1)
        if not output.is_contiguous():
            return output + F.conv2d(h, up[:, :, None, None])
        n, channels = output.shape[:2]
        output.view(n, channels, -1).baddbmm_(up.expand(n, -1, -1), h.flatten(2))
        return output
    h = F.linear(x, module.down.flatten(1)) * mask.view([-1] + [1] * (x.dim() - 1))
    if not output.is_contiguous():
        return output + F.linear(h, up)
    output.view(-1, up.shape[0]).addmm_(h.reshape(-1, h.shape[-1]), up.t())
    return output


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
        self._blocks = sorted({module.row for _, module in self._modules})
        self._dense_blocks = {module.row for _, module in self._modules if module.dense is not None}
        self._rows = 0
        self._masks: Dict[str, torch.Tensor] = {}  # block -> (rows,) 0/1 in the layers' dtype
        self._on_rows: Dict[str, object] = {}  # block -> rows with it on (a device index tensor for dense ΔW); None: none
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
        if not self._modules:
            return
        weight = self._modules[0][0].weight
        blocks = self._blocks
        # One host-to-device copy per forward: the (rows, blocks) 0/1 matrix, a column per block.
        matrix = torch.tensor([[1.0 if block in on else 0.0 for block in blocks] for on in configurations]).to(weight.device, weight.dtype)
        self._masks = {block: matrix[:, k] for k, block in enumerate(blocks)}
        self._on_rows = {}
        for block in blocks:
            rows = [r for r, on in enumerate(configurations) if block in on]
            # Index tensors only where a dense ΔW runs on the rows that need it.
            self._on_rows[block] = None if not rows else torch.tensor(rows).to(weight.device) if block in self._dense_blocks else rows

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
                part = dense_output(layer, module.dense, x.index_select(0, on))
                return output.index_add(0, on, part if bias is None else part + bias)
            mask = self._masks[module.row]
            output = add_factored_(layer, module, x, output, mask)
            return output if bias is None else output + bias * mask.view([-1] + [1] * (output.dim() - 1))

        return add_delta
