"""Deterministic cost counters for the tests and benchmarks: dispatched ops and saved activations.

Wall-clock time depends on the machine; these counts do not, so they can be CI budgets
(docs/perf.md). Both run a closure that does forward and backward and report what it cost.
"""

from __future__ import annotations

import collections
from typing import Callable, Counter, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Ops that only make a new view of existing memory (aten.view, t, transpose, detach, expand,
# permute, squeeze, unsqueeze, as_strided, alias, slice, select ... — every op whose schema says
# its output aliases its input) launch no kernel and move no memory, so they are not counted.
# aten._unsafe_view is a view too (reshape of a fresh tensor) but its schema does not say so.
_ALSO_VIEWS = frozenset({"aten._unsafe_view", "aten._reshape_alias", "aten.lift_fresh"})


def is_compute_op(func) -> bool:
    if getattr(func, "is_view", False):
        return False
    return str(func.overloadpacket) not in _ALSO_VIEWS


class OpCounter(TorchDispatchMode):
    """Counts aten ops as dispatched (after autograd and composite decomposition), per op name."""

    def __init__(self):
        super().__init__()
        self.ops: Counter[str] = collections.Counter()
        self.compute_ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        self.compute_ops += is_compute_op(func)
        return func(*args, **(kwargs or {}))


def count_compute_ops(step: Callable[[], None]) -> int:
    """Dispatched compute ops (views excluded, see above) that `step()` runs."""
    with OpCounter() as counter:
        step()
    return counter.compute_ops


def saved_activation_bytes(step: Callable[[], None], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd keeps for backward while `step()` builds a graph.

    `exclude`: tensors whose storage is not an activation (weights, buffers). `step` must return
    the graph's output and keep no other reference; the graph is freed afterwards.
    """
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    storages = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = step()
    del output
    return sum(storages.values())
