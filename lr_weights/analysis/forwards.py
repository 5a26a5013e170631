"""The measure's forwards with several weight configurations per batch (blocks × samples).

A file's configurations are the full LoRA, each row ablated and each row alone (the base, with
nothing on, goes first in the first file's list). Each configuration needs every sample, so the
measure has (configurations × samples) batch rows, taken `rows` at a time in config-major order:
one forward holds the ablations of several blocks. Every forward has the same number of rows (the
last one is filled up with copies of its last row, whose outputs are dropped), so a row's result
never depends on which forward it fell into. U-Net rows are switched per batch row by
`batched.BlockRowDeltas`; text-encoder rows change the conditioning, encoded once per state with
their ΔW merged into the encoders (`swap.MergedWeights`) and restored before any forward.

Only per-sample squared distances are kept (and the base and full outputs they are taken from),
so memory does not grow with the number of blocks.
"""

from __future__ import annotations

import logging
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from lr_weights.analysis.batched import BlockRowDeltas
from lr_weights.analysis.deltas import LoraDeltas
from lr_weights.analysis.denoiser import Conditioning, Denoiser
from lr_weights.analysis.swap import MergedWeights

logger = logging.getLogger(__name__)

Configuration = Tuple[str, Optional[str], frozenset]  # (kind, row, rows on): base, full, ablation, alone
AUTO_MOST_ROWS = 64  # auto never packs more: beyond it a GPU gains nothing and int32 indexing limits come near
AUTO_CPU_ROWS = 4
AUTO_MEMORY_SHARE = 0.8  # of the free device memory, the rest kept for the allocator's fragmentation


def configurations(rows: Sequence[str]) -> List[Configuration]:
    """A file's configurations: full, each row ablated, each row alone."""
    everything = frozenset(rows)
    return [("full", None, everything)] + [("ablation", r, everything - {r}) for r in rows] + [("alone", r, frozenset([r])) for r in rows]


def even_rows(total: int, most: int) -> int:
    """Rows per forward: as few forwards of at most `most` rows as `total` needs, filled evenly."""
    forwards = math.ceil(total / most)
    return math.ceil(total / forwards)


def auto_rows(denoiser: Denoiser, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> int:
    """Rows per forward that fit in AUTO_MEMORY_SHARE of the free GPU memory, from one probe forward
    of two rows (its peak memory per row; the fixed workspaces in it only make the estimate safer);
    AUTO_CPU_ROWS off CUDA, where memory is not measured."""
    device = latents.device
    if device.type != "cuda":
        return AUTO_CPU_ROWS
    probe = min(2, latents.shape[0])
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        denoiser.predict(latents[:probe], timesteps[:probe], {k: v[:probe] for k, v in cond.items()})
    torch.cuda.synchronize(device)
    per_row = max(1, (torch.cuda.max_memory_allocated(device) - before) / probe)
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    rows = max(1, min(AUTO_MOST_ROWS, int(AUTO_MEMORY_SHARE * free / per_row)))
    logger.info("analyze: %.0f MiB per batch row, %.0f MiB free: %d rows per forward", per_row / 2**20, free / 2**20, rows)
    return rows


def out_of_memory_error(error: BaseException, device, rows: int) -> Optional[ValueError]:
    """The one-line error for an out-of-memory `error` (None for any other error)."""
    if "out of memory" not in str(error).lower():
        return None
    return ValueError(f"out of memory on {device} with {rows} rows per forward: lower --batch-size (down to 1), then --resolution, or use --dtype fp16/bf16")


class FileForwards:
    """One stream of configurations (a file's, the base first for the first file) and its distances."""

    def __init__(self, denoiser: Denoiser, samples, deltas: Optional[LoraDeltas], rows: Sequence[str], with_base: bool, prompts: Sequence[str], base_cond: Conditioning):
        self.denoiser = denoiser
        self.samples = samples
        self.deltas = deltas
        self.configs: List[Configuration] = ([("base", None, frozenset())] if with_base else []) + (configurations(rows) if deltas is not None else [])
        self.text_encoder_rows = frozenset(r for r in rows if not any(m.row == r and m.is_unet for m in deltas.modules)) if deltas is not None else frozenset()
        self.unet_rows = [r for r in rows if r not in self.text_encoder_rows]
        self.states = sorted({on & self.text_encoder_rows for _, _, on in self.configs}, key=sorted)
        self.conds = self._encode(prompts, base_cond)
        # per configuration: per-sample squared distances (base: ‖f(W)‖²), filled as forwards run
        self.distances: List[List[Optional[float]]] = [[None] * len(samples) for _ in self.configs]

    def _encode(self, prompts: Sequence[str], base_cond: Conditioning) -> Dict[str, torch.Tensor]:
        """Every text-encoder state's conditioning stacked: [state, prompt, ...] per key."""
        conds = []
        merged = MergedWeights(self.denoiser.layers, self.deltas, self.text_encoder_rows) if self.deltas is not None else None
        try:
            for state in self.states:
                if not state:
                    conds.append(base_cond)
                    continue
                merged.set(state)
                with torch.no_grad():
                    conds.append(self.denoiser.encode(list(prompts) or [""]))
        finally:
            if merged is not None:
                merged.restore()
        return {key: torch.stack([c[key] for c in conds]) for key in base_cond}

    @property
    def total_rows(self) -> int:
        return len(self.configs) * len(self.samples)

    def run(self, start: int, rows: int, hooks: Optional[BlockRowDeltas], base: Dict[int, torch.Tensor], full: Dict[int, torch.Tensor]) -> None:
        """The forward of batch rows start..start+rows (config-major), distances of its real rows."""
        count = len(self.samples)
        real = list(range(start, min(start + rows, self.total_rows)))
        batch = real + [real[-1]] * (rows - len(real))
        configs = [self.configs[r // count] for r in batch]
        sample = torch.tensor([r % count for r in batch], device=self.samples.latents.device)
        state = torch.tensor([self.states.index(on & self.text_encoder_rows) for _, _, on in configs], device=sample.device)
        prompt = self.samples.prompt_index[sample]
        cond = {key: value[state, prompt] for key, value in self.conds.items()}
        if hooks is not None:
            hooks.select([on for _, _, on in configs])
        with torch.no_grad():
            out = self.denoiser.predict(self.samples.latents[sample], self.samples.timesteps[sample], cond).float()
        kinds = [self.configs[r // count][0] for r in real]
        for j, (r, kind) in enumerate(zip(real, kinds)):  # the references first: full may share this forward with ablations
            if kind in ("base", "full"):
                (base if kind == "base" else full)[r % count] = out[j].clone()  # not a view keeping the whole batch
        zero = torch.zeros_like(out[0])
        references = torch.stack([zero if kind == "base" else full[r % count] if kind == "ablation" else base[r % count] for r, kind in zip(real, kinds)])
        # One host sync per forward; each row summed on its own, the same way in every forward.
        values = (out[: len(real)].double() - references.double()).pow(2).flatten(1).sum(1).tolist()
        for r, value in zip(real, values):
            self.distances[r // count][r % count] = value


def mean(values: Sequence[float]) -> float:
    return float(torch.tensor(values, dtype=torch.float64).mean())
