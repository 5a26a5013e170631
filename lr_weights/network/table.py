"""The per-block table: what each U-Net block trains, at what LR multiplier, with which dims.

Upstream spreads this over five printed lists; we log one table at creation, store it in the
saved file's metadata, and the CLI prints it before any GPU time is spent.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from lr_weights.archs.blocks import Architecture


@dataclass(frozen=True)
class BlockRow:
    block: int  # sd-scripts block index; -1 = text encoder(s) or a U-Net layer of unknown block
    name: str
    modules: int
    params: int
    lr_weight: float
    linear: str  # "dim/alpha" of Linear and 1x1 modules, "" when there are none
    conv: str  # "dim/alpha" of k x k conv modules
    status: str  # "train", "pruned", "no modules"


@dataclass(frozen=True)
class ModuleFacts:
    """What the table needs to know about one adapter module."""

    block: int
    is_unet: bool
    kind: str  # linear | conv1x1 | conv
    dim: int
    alpha: float
    params: int
    text_encoder: str = "TE"  # the encoder's label (FLUX: TE1 = CLIP-L, TE3 = T5-XXL)


def _dims(facts: Sequence[ModuleFacts]) -> str:
    pairs = sorted({(f.dim, f.alpha) for f in facts})
    return ", ".join(f"{d}/{a:g}" for d, a in pairs)


def build_block_table(
    arch: Architecture,
    modules: Sequence[ModuleFacts],
    block_lr_weights: Optional[Sequence[float]],
    zero_dim_blocks: Sequence[int] = (),
    text_encoder_weights: Optional[Mapping[str, float]] = None,
) -> List[BlockRow]:
    """`zero_dim_blocks`: blocks whose LR weight is > 0 but whose dims are all 0, so nothing in them trains.

    Text encoders are one `TE` row, or one row per encoder where the architecture's LBW vocabulary
    names them apart (FLUX: CLIP, T5), with `text_encoder_weights` (label -> LR weight).
    """

    def row(block: int, name: str, facts: List[ModuleFacts], weight: float) -> BlockRow:
        linear = [f for f in facts if f.kind != "conv"]
        conv = [f for f in facts if f.kind == "conv"]
        if weight == 0:
            status = "pruned"
        elif block in zero_dim_blocks:
            status = "dim 0: not trained"
        elif not facts:
            status = "no modules"
        else:
            status = "train"
        return BlockRow(block, name, len(facts), sum(f.params for f in facts), weight, _dims(linear), _dims(conv), status)

    te = [m for m in modules if not m.is_unet]
    labels = arch.lbw.text_encoder_labels
    if labels == ("TE",):
        rows = [row(-1, "TE", te, 1.0)] if te else []
    else:
        weights = text_encoder_weights or {}
        names = dict(arch.lbw.text_encoder_rows)
        rows = [row(-1, names.get(label, label), [m for m in te if m.text_encoder == label], weights.get(label, 1.0)) for label in labels]
        rows = [r for r in rows if r.modules or r.lr_weight == 0]
    by_block: Dict[int, List[ModuleFacts]] = {}
    for fact in modules:
        if fact.is_unet:
            by_block.setdefault(fact.block, []).append(fact)
    for index in range(arch.num_blocks):
        weight = 1.0 if block_lr_weights is None else block_lr_weights[index]
        rows.append(row(index, arch.block_name(index), by_block.get(index, []), weight))
    if -1 in by_block:
        rows.append(row(-1, "unknown", by_block[-1], 1.0))
    return rows


def format_block_table(rows: Sequence[BlockRow], unet_lr: Optional[float] = None) -> str:
    header: Tuple[str, ...] = ("block", "idx", "modules", "params", "lr weight", "dim/alpha", "conv dim/alpha", "status")
    if unet_lr is not None:
        header = header[:5] + ("unet lr",) + header[5:]
    lines = [header]
    for r in rows:
        cells = [r.name, "" if r.block < 0 else str(r.block), str(r.modules), f"{r.params:,}", f"{r.lr_weight:.4g}"]
        if unet_lr is not None:
            cells.append("" if r.block < 0 and r.name != "unknown" else f"{unet_lr * r.lr_weight:.3g}")
        cells += [r.linear or "-", r.conv or "-", r.status]
        lines.append(tuple(cells))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = []
    for line in lines:
        text.append("  ".join(cell.ljust(w) if i in (0, len(header) - 1) else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))).rstrip())
    total_modules = sum(r.modules for r in rows)
    total_params = sum(r.params for r in rows)
    pruned = [r.name for r in rows if r.status == "pruned"]
    text.append(f"total: {total_modules} modules, {total_params:,} params" + (f"; pruned: {', '.join(pruned)}" if pruned else ""))
    return "\n".join(text)


def block_table_json(rows: Sequence[BlockRow]) -> str:
    return json.dumps([asdict(r) for r in rows], separators=(",", ":"))
