"""LBW (sd-webui-lora-block-weight) vectors <-> per-block weights <-> down/mid/up network_args.

LBW writes one weight per block as a comma vector whose first entry, BASE, is the text encoder(s).
Its block names are ours (CONTRACT §2): training index k is LBW's IN/M/OUT name of block k. The
vector lengths LBW knows, and the blocks each one names:

    SD 17   BASE, IN01, IN02, IN04, IN05, IN07, IN08, M00, OUT03..OUT11 (the blocks a plain LoRA has)
    SD 26   BASE, IN00..IN11, M00, OUT00..OUT11
    SDXL 12 BASE, IN04, IN05, IN07, IN08, M00, OUT00..OUT05
    SDXL 20 BASE, IN00..IN08, M00, OUT00..OUT08

LBW expands a short vector to the full one by name and gives every block it does not name 0; we do
the same. LBW's SDXL M00 covers all of sd-scripts' three middle blocks M00..M02. LBW's built-in
presets are 17 values (SD layout); on SDXL LBW applies them by name, so do we.

Pure functions, no torch: the CLI (`lr-weights show --lbw`, `bake`) and the `lbw_weights`
network arg share them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .blocks import Architecture
from .errors import NetworkArgError

_SD26 = ("BASE",) + tuple(f"IN{i:02d}" for i in range(12)) + ("M00",) + tuple(f"OUT{i:02d}" for i in range(12))
_SD17 = ("BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00") + tuple(f"OUT{i:02d}" for i in range(3, 12))
_XL20 = ("BASE",) + tuple(f"IN{i:02d}" for i in range(9)) + ("M00",) + tuple(f"OUT{i:02d}" for i in range(9))
_XL12 = ("BASE", "IN04", "IN05", "IN07", "IN08", "M00") + tuple(f"OUT{i:02d}" for i in range(6))

# The block names each vector length carries, per architecture (short one first).
LBW_BLOCK_IDS: Mapping[str, Mapping[int, Tuple[str, ...]]] = {
    "sd": {17: _SD17, 26: _SD26},
    "sdxl": {12: _XL12, 20: _XL20},
}

# LBW's built-in presets (scripts/lora_block_weight.py, DEF_WEIGHT_PRESET), all in the 17 layout.
LBW_PRESETS: Mapping[str, str] = {
    "NONE": "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0",
    "ALL": "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
    "INS": "1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0",
    "IND": "1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0",
    "INALL": "1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0",
    "MIDD": "1,0,0,0,1,1,1,1,1,1,1,1,0,0,0,0,0",
    "OUTD": "1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0",
    "OUTS": "1,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,1",
    "OUTALL": "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1",
    "ALL0.5": "0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5",
}
_PRESET_LAYOUT = _SD17


@dataclass(frozen=True)
class LBWWeights:
    """An LBW vector resolved for one architecture."""

    arch: Architecture
    base: float  # text encoder(s)
    blocks: Tuple[float, ...]  # one per sd-scripts block index (len = arch.num_blocks)

    @property
    def down(self) -> Tuple[float, ...]:
        return self.blocks[self.arch.down_start : self.arch.mid_start]

    @property
    def mid(self) -> Tuple[float, ...]:
        return self.blocks[self.arch.mid_start : self.arch.up_start]

    @property
    def up(self) -> Tuple[float, ...]:
        return self.blocks[self.arch.up_start : self.arch.up_start + self.arch.num_down]


def lbw_lengths(arch: Architecture) -> Tuple[int, ...]:
    return tuple(LBW_BLOCK_IDS[arch.name])


def _lbw_name(arch: Architecture, index: int) -> Optional[str]:
    """LBW's name of a training block index, or None for the blocks LBW has no entry for (SDXL EMB/FINAL)."""
    name = arch.block_name(index)
    if arch.is_sdxl and name.startswith("M"):
        return "M00"
    return name if name in _SD26 else None


def _forms(arch: Architecture) -> str:
    lengths = " or ".join(str(n) for n in lbw_lengths(arch))
    return (
        f"an LBW preset ({', '.join(LBW_PRESETS)}) or {lengths} comma-separated numbers for {arch.name.upper()} "
        f"(BASE first, then {', '.join(LBW_BLOCK_IDS[arch.name][lbw_lengths(arch)[0]][1:3])}, ...)"
    )


def _parse_numbers(key: str, text: str, arch: Architecture) -> List[float]:
    values = []
    for position, entry in enumerate(text.split(","), start=1):
        entry = entry.strip()
        try:
            value = float(entry)
        except ValueError:
            extra = " (LBW's random R/U and X entries cannot be trained or baked)" if entry[:1] in ("R", "U", "X") else ""
            raise NetworkArgError(key, text, f"{_forms(arch)}; entry {position} is {entry!r}{extra}") from None
        if not math.isfinite(value):
            raise NetworkArgError(key, text, f"finite numbers; entry {position} is {entry!r}")
        values.append(value)
    return values


def parse_lbw(arch: Architecture, text: str, key: str = "lbw_weights") -> LBWWeights:
    """An LBW preset name or vector -> BASE and one weight per block of `arch`.

    Blocks the vector does not name get 0 (LBW's expansion); SDXL's three middle blocks all take
    LBW's M00; SDXL EMB/FINAL (never a module) keep 1.0 as in sd-scripts' flat list.
    """
    raw = str(text).strip()
    preset = _find_preset(raw)
    if preset is not None:
        named = dict(zip(_PRESET_LAYOUT, (float(v) for v in LBW_PRESETS[preset].split(","))))
    else:
        if "," not in raw:
            raise NetworkArgError(key, text, _forms(arch))
        values = _parse_numbers(key, raw, arch)
        ids = LBW_BLOCK_IDS[arch.name].get(len(values))
        if ids is None:
            other = "sdxl" if arch.name == "sd" else "sd"
            hint = f"; {len(values)} values is the {other.upper()} layout" if len(values) in LBW_BLOCK_IDS[other] else ""
            raise NetworkArgError(key, text, f"{_forms(arch)}; got {len(values)} values{hint}")
        named = dict(zip(ids, values))
    blocks = []
    for index in range(arch.num_blocks):
        name = _lbw_name(arch, index)
        blocks.append(1.0 if name is None else named.get(name, 0.0))
    return LBWWeights(arch, named.get("BASE", 0.0), tuple(blocks))


def _find_preset(text: str) -> Optional[str]:
    for name in LBW_PRESETS:
        if text.upper() == name:
            return name
    return None


def format_number(value: float) -> str:
    """Shortest exact text of a float: 1 -> "1", 0.5 -> "0.5", 1/3 -> "0.3333333333333333"."""
    value = float(value)
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def lbw_vector(arch: Architecture, blocks: Sequence[float], base: float = 1.0, length: Optional[int] = None) -> str:
    """Per-block weights (one per block index) -> an LBW vector string of `length` values.

    The default is the full layout (SD 26, SDXL 20), which says every block; the short layout leaves
    out the blocks a plain LoRA lacks (LBW gives them 0). SDXL's three middle blocks must agree,
    since LBW has one M00 for them.
    """
    if len(blocks) != arch.num_blocks:
        raise ValueError(f"{arch.name.upper()} has {arch.num_blocks} blocks, got {len(blocks)} weights")
    lengths = lbw_lengths(arch)
    length = lengths[-1] if length is None else int(length)
    if length not in lengths:
        raise NetworkArgError("lbw length", length, " or ".join(str(n) for n in lengths) + f" for {arch.name.upper()}")
    named: Dict[str, float] = {"BASE": float(base)}
    for index, weight in enumerate(blocks):
        name = _lbw_name(arch, index)
        if name is None:
            continue
        if name in named and named[name] != weight:
            mids = ", ".join(f"{arch.block_name(i)}={format_number(blocks[i])}" for i in range(arch.mid_start, arch.up_start))
            raise ValueError(f"LBW has one M00 weight for SDXL's three middle blocks, but they differ ({mids})")
        named[name] = float(weight)
    return ",".join(format_number(named[name]) for name in LBW_BLOCK_IDS[arch.name][length])


def block_weights_to_network_args(arch: Architecture, blocks: Sequence[float]) -> Dict[str, str]:
    """Per-block weights -> the down_lr_weight / mid_lr_weight / up_lr_weight strings that give them."""
    if len(blocks) != arch.num_blocks:
        raise ValueError(f"{arch.name.upper()} has {arch.num_blocks} blocks, got {len(blocks)} weights")

    def join(values: Sequence[float]) -> str:
        return ",".join(format_number(v) for v in values)

    return {
        "down_lr_weight": join(blocks[arch.down_start : arch.mid_start]),
        "mid_lr_weight": join(blocks[arch.mid_start : arch.up_start]),
        "up_lr_weight": join(blocks[arch.up_start : arch.up_start + arch.num_down]),
    }


def lbw_to_network_args(arch: Architecture, text: str, key: str = "lbw_weights") -> Dict[str, str]:
    """An LBW preset or vector -> down/mid/up network_args (BASE is not a block LR; see parse_lbw)."""
    return block_weights_to_network_args(arch, parse_lbw(arch, text, key).blocks)
