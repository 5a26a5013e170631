"""For the next run: the blocks whose share is under a cut-off, dropped, as an LBW vector (for
inference) and as the per-stack `*_lr_weight` network_args with `block_lr_zero_threshold` (for
training). Kept blocks get 1, dropped ones 0; blocks the file has no modules in get 0 too (nothing
was measured there). The vectors are written by lr_weights.args.lbw, the same code that reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

from lr_weights.analysis.measure import FileEffect
from lr_weights.archs.base import Architecture
from lr_weights.errors import NetworkArgError

DEFAULT_CUTOFF = 0.02


@dataclass(frozen=True)
class Suggestion:
    cutoff: float
    kept: Tuple[str, ...]
    dropped: Tuple[str, ...]  # rows with share < cutoff
    lbw: str  # LBW vector in the shortest layout that says exactly these weights
    network_args: Tuple[Tuple[str, str], ...]  # (key, value) in stack order, then the threshold
    text_encoders_dropped: bool


def parse_cutoff(text) -> float:
    from lr_weights.args.weights import parse_float

    what = "a share between 0 and 1 (e.g. 0.02 drops blocks with under 2% of the effect)"
    value = parse_float("--suggest", str(text), what=what)
    if not 0 <= value < 1:
        raise NetworkArgError("--suggest", text, what)
    return value


def _lbw_blocks(arch: Architecture, blocks: List[float]) -> List[float]:
    """LBW entries that cover several blocks (SDXL's M00 = M00..M02) get the largest of them, so a
    block that matters is never dropped for its neighbours' sake."""
    result = list(blocks)
    for entry in arch.lbw.forms[-1]:
        covered = [arch.block_index_of(t) for t in arch.lbw.targets(entry)]
        covered = [i for i in covered if i >= 0]
        if len(covered) > 1:
            for i in covered:
                result[i] = max(blocks[j] for j in covered)
    return result


def _shortest_vector(arch: Architecture, blocks: List[float], base: float, text_encoders: Dict[str, float]) -> str:
    """The shortest of the architecture's LBW forms that reads back (by parse_lbw) as exactly these
    weights: LBW's 17-value SD form when the blocks it leaves out are 0 anyway, else the full one."""
    from lr_weights.args.lbw import lbw_vector, parse_lbw

    for length in sorted(arch.lbw.lengths):
        try:
            text = lbw_vector(arch, blocks, base, length=length, text_encoders=text_encoders)
        except ValueError:  # one entry of this form covers blocks that differ
            continue
        parsed = parse_lbw(arch, text, key="--suggest")
        if parsed.blocks == tuple(blocks) and dict(parsed.text_encoders) == {k: text_encoders[k] for k in dict(parsed.text_encoders)}:
            return text
    return lbw_vector(arch, blocks, base, text_encoders=text_encoders)


def suggest(effect: FileEffect, arch: Architecture, cutoff: float) -> Suggestion:
    from lr_weights.args.lbw import block_weights_to_network_args, format_number

    blocks = [0.0] * arch.num_blocks
    text_encoders: Dict[str, float] = {}
    kept, dropped = [], []
    for row in effect.blocks:
        if row.index is None and row.block == "unknown":  # U-Net modules in no block: nothing to address
            continue
        keep = row.share >= cutoff
        (kept if keep else dropped).append(row.block)
        if row.index is not None:
            blocks[row.index] = 1.0 if keep else 0.0
        else:
            text_encoders[row.block] = 1.0 if keep else 0.0
    for index in arch.moduleless:  # blocks that never hold a module keep LBW's neutral 1
        if arch.stack_of(index) is None:
            blocks[index] = 1.0
    labels = arch.lbw.text_encoder_labels
    # SD/SDXL LBW has one BASE for all encoders (kept if any is); FLUX's CLIP and T5 are their own.
    te_weights = {label: text_encoders.get(label, max(text_encoders.values()) if text_encoders and len(labels) == 1 else 1.0) for label in labels}
    base = te_weights[labels[0]]
    lbw = _shortest_vector(arch, _lbw_blocks(arch, blocks), base, te_weights)
    args = list(block_weights_to_network_args(arch, blocks).items()) + [("block_lr_zero_threshold", format_number(0.0))]
    return Suggestion(cutoff, tuple(kept), tuple(dropped), lbw, tuple(args), any(v == 0 for v in text_encoders.values()))


def format_suggestion(suggestion: Suggestion, path: str) -> str:
    percent = f"{suggestion.cutoff * 100:g}%"
    lines = [f"suggestion for {path}: drop the blocks with a share under {percent} (cut-off {suggestion.cutoff:g})"]
    lines.append(f"  dropped: {', '.join(suggestion.dropped) or 'none'}")
    lines.append(f"  LBW vector (inference): {suggestion.lbw}")
    args = " ".join(f'"{k}={v}"' for k, v in suggestion.network_args)
    lines.append(f"  training: --network_args {args}")
    lines.append("    (a block trains only if its weight > block_lr_zero_threshold: the 0 blocks get no module)")
    if suggestion.text_encoders_dropped:
        lines.append("  the text encoder is under the cut-off too: --network_train_unet_only")
    return "\n".join(lines)
