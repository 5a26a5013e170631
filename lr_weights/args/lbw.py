"""LBW (sd-webui-lora-block-weight) vectors <-> per-block weights <-> per-stack network_args.

LBW writes one weight per block as a comma vector. Each architecture's vocabulary (its forms,
presets and what each entry scales) is data in lr_weights/archs/; the rules here are shared:

    SD 17   BASE, IN01, IN02, IN04, IN05, IN07, IN08, M00, OUT03..OUT11 (the blocks a plain LoRA has)
    SD 26   BASE, IN00..IN11, M00, OUT00..OUT11
    SDXL 12 BASE, IN04, IN05, IN07, IN08, M00, OUT00..OUT05
    SDXL 20 BASE, IN00..IN08, M00, OUT00..OUT08
    FLUX 61 CLIP, T5, IN, D00..D18, S00..S37, OUT (LBW; CLIP and T5 scale the two text encoders)
    FLUX 58 BASE, D00..D18, S00..S37 (ComfyUI Inspire pack; BASE scales text encoders and IN)

LBW expands a short vector to the full one by name and gives every block it does not name 0; we do
the same. Blocks no form of the vocabulary names (SDXL's EMB/FINAL) keep 1.0. LBW's SDXL M00 covers
all of sd-scripts' three middle blocks. LBW's SD presets are 17 values (SD layout); on SDXL LBW
applies them by name, so do we; FLUX has LBW's FLUXALL.

Pure functions, no torch: the CLI (`lr-weights show --lbw`, `bake`) and the `lbw_weights`
network arg share them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from lr_weights.archs import ARCHITECTURES
from lr_weights.archs.base import Architecture
from lr_weights.archs.sd import LBW_PRESETS as _SD_PRESETS
from lr_weights.errors import NetworkArgError

# The block names each vector length carries, per architecture.
LBW_BLOCK_IDS: Mapping[str, Mapping[int, Tuple[str, ...]]] = {
    name: {len(form): form for form in arch.lbw.forms} for name, arch in ARCHITECTURES.items()
}

# LBW's built-in SD presets (scripts/lora_block_weight.py, DEF_WEIGHT_PRESET), in the 17 layout.
LBW_PRESETS: Mapping[str, str] = dict(_SD_PRESETS)


@dataclass(frozen=True)
class LBWWeights:
    """An LBW vector resolved for one architecture."""

    arch: Architecture
    base: float  # the (first) text encoder's weight: SD/SDXL BASE, FLUX CLIP
    blocks: Tuple[float, ...]  # one per block index (len = arch.num_blocks)
    # every text-encoder label of the vocabulary -> weight (SD: ("TE", BASE); FLUX: TE1, TE3)
    text_encoders: Tuple[Tuple[str, float], ...] = ()

    @property
    def down(self) -> Tuple[float, ...]:
        return self.blocks[self.arch.down_start : self.arch.mid_start]

    @property
    def mid(self) -> Tuple[float, ...]:
        return self.blocks[self.arch.mid_start : self.arch.up_start]

    @property
    def up(self) -> Tuple[float, ...]:
        return self.blocks[self.arch.up_start : self.arch.up_start + self.arch.num_down]

    def text_encoder(self, label: str) -> float:
        return dict(self.text_encoders).get(label, self.base)


def lbw_lengths(arch: Architecture) -> Tuple[int, ...]:
    return arch.lbw.lengths


def _universe(arch: Architecture) -> set:
    """Everything some form of the vocabulary names: blocks and text-encoder labels."""
    return {target for form in arch.lbw.forms for entry in form for target in arch.lbw.targets(entry)}


def _lbw_entry(arch: Architecture, index: int) -> Optional[str]:
    """The entry of the full form that scales block `index`, or None when LBW has none for it."""
    name = arch.block_name(index)
    for entry in arch.lbw.forms[-1]:
        if name in arch.lbw.targets(entry):
            return entry
    return None


def _forms(arch: Architecture) -> str:
    lengths = " or ".join(str(n) for n in lbw_lengths(arch))
    presets = ", ".join(name for name, _ in arch.lbw.presets)
    described = "; ".join(f"{len(form)}: {form[0]}, {form[1]}, {form[2]}, ..." for form in arch.lbw.forms)
    if arch.name in ("sd", "sdxl"):
        first = arch.lbw.forms[0]
        return f"an LBW preset ({presets}) or {lengths} comma-separated numbers for {arch.name.upper()} (BASE first, then {', '.join(first[1:3])}, ...)"
    return f"an LBW preset ({presets}) or {lengths} comma-separated numbers for {arch.name.upper()} ({described})"


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


def named_form(arch: Architecture, text: str, key: str = "lbw_weights") -> Tuple[Tuple[str, ...], Tuple[float, ...]]:
    """(entry names, values) of an LBW preset or vector for `arch`; errors name the accepted forms."""
    if not arch.lbw.forms:
        own = ", ".join(arch.lr_weight_keys)
        raise NetworkArgError(key, text, f"no LBW vector: LoRA Block Weight has none for {arch.title} (only for SD, SDXL and FLUX); set block weights with {own}")
    raw = str(text).strip()
    preset = arch.lbw.preset(raw)
    if preset is not None:
        return arch.lbw.preset_form, tuple(float(v) for v in arch.lbw.preset_vectors[preset].split(","))
    if "," not in raw:
        raise NetworkArgError(key, text, _forms(arch))
    values = _parse_numbers(key, raw, arch)
    form = arch.lbw.form(len(values))
    if form is None:
        owners = [other.name.upper() for other in ARCHITECTURES.values() if other is not arch and other.lbw.form(len(values)) is not None]
        hint = f"; {len(values)} values is the {owners[0]} layout" if owners else ""
        raise NetworkArgError(key, text, f"{_forms(arch)}; got {len(values)} values{hint}")
    return form, tuple(values)


def parse_lbw(arch: Architecture, text: str, key: str = "lbw_weights") -> LBWWeights:
    """An LBW preset name or vector -> text-encoder weights and one weight per block of `arch`.

    Blocks the vector does not name get 0 (LBW's expansion); SDXL's three middle blocks all take
    LBW's M00; blocks no LBW form names (SDXL EMB/FINAL, never a module) keep 1.0 as in sd-scripts'
    flat list.
    """
    form, values = named_form(arch, text, key)
    targeted: Dict[str, float] = {}
    for entry, value in zip(form, values):
        for target in arch.lbw.targets(entry):
            targeted[target] = value
    universe = _universe(arch)
    blocks = tuple(targeted.get(name, 0.0 if name in universe else 1.0) for name in arch.block_names)
    labels = arch.lbw.text_encoder_labels
    text_encoders = tuple((label, targeted.get(label, 0.0)) for label in labels)
    base = text_encoders[0][1] if text_encoders else 1.0  # a family without text encoders (HunyuanImage)
    return LBWWeights(arch, base, blocks, text_encoders)


# An LBW vector is for reading and pasting: at double precision's 15 significant digits the noise of
# float arithmetic (0.49999999999999994) does not show; network_args keep every bit (exact repr).
LBW_DIGITS = 15


def format_number(value: float, significant: Optional[int] = None) -> str:
    """Shortest text of a float: exact by default (1 -> "1", 0.5 -> "0.5", 1/3 ->
    "0.3333333333333333"); with `significant`, rounded to that many digits and stripped
    (0.49999999999999994 at 15 -> "0.5")."""
    value = float(value)
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if significant is not None:
        return format_number(float(format(value, f".{significant}g")))
    return repr(value)


def lbw_vector(
    arch: Architecture,
    blocks: Sequence[float],
    base: float = 1.0,
    length: Optional[int] = None,
    text_encoders: Optional[Mapping[str, float]] = None,
) -> str:
    """Per-block weights (one per block index) -> an LBW vector string of `length` values.

    The default is the full layout (SD 26, SDXL 20, FLUX 61), which says every block; a short
    layout leaves out blocks (LBW gives them 0). Blocks that one entry covers must agree (SDXL's
    three middle blocks share LBW's M00; FLUX's Inspire BASE covers both encoders and IN).
    `text_encoders` gives a label's weight (FLUX "TE1", "TE3"); `base` is the default for all.
    """
    if len(blocks) != arch.num_blocks:
        raise ValueError(f"{arch.name.upper()} has {arch.num_blocks} blocks, got {len(blocks)} weights")
    lengths = lbw_lengths(arch)
    length = lengths[-1] if length is None else int(length)
    form = arch.lbw.form(length)
    if form is None:
        raise NetworkArgError("lbw length", length, " or ".join(str(n) for n in lengths) + f" for {arch.name.upper()}")
    values: Dict[str, float] = {label: float(base) for label in arch.lbw.text_encoder_labels}
    values.update({label: float(w) for label, w in (text_encoders or {}).items()})
    values.update({name: float(w) for name, w in zip(arch.block_names, blocks)})
    _refuse_lost_weights(arch, form, values, lengths)
    out = []
    for entry in form:
        covered = [t for t in arch.lbw.targets(entry) if t in values]
        distinct = {values[t] for t in covered}
        if len(distinct) > 1:
            if arch.is_sdxl and entry == "M00":
                mids = ", ".join(f"{arch.block_name(i)}={format_number(blocks[i])}" for i in range(arch.mid_start, arch.up_start))
                raise ValueError(f"LBW has one M00 weight for SDXL's three middle blocks, but they differ ({mids})")
            parts = ", ".join(f"{t}={format_number(values[t])}" for t in covered)
            raise ValueError(f"LBW's {length}-value {arch.name.upper()} form has one {entry} weight for {', '.join(covered)}, but they differ ({parts})")
        out.append(format_number(values[covered[0]], LBW_DIGITS) if covered else "0")
    return ",".join(out)


def _refuse_lost_weights(arch: Architecture, form: Tuple[str, ...], values: Mapping[str, float], lengths: Tuple[int, ...]) -> None:
    """A short form has no entry for some blocks, and LBW gives those 0. Weights of 0 or 1 (nothing
    set) there are no loss; any other weight would be dropped silently, so it is an error."""
    named = {target for entry in form for target in arch.lbw.targets(entry)}
    lost = [f"{name}={format_number(values[name])}" for name in arch.block_names if name in _universe(arch) and name not in named and values[name] not in (0.0, 1.0)]
    if lost:
        raise NetworkArgError(
            "lbw length", len(form),
            f"a form that holds every weight: the {len(form)}-value {arch.name.upper()} form has no entry for {', '.join(lost)} "
            f"(LBW gives them 0); use {lengths[-1]}, which names every block",
        )


def block_weights_to_network_args(arch: Architecture, blocks: Sequence[float]) -> Dict[str, str]:
    """Per-block weights -> the per-stack LR-weight strings that give them (down/mid/up, double/single).

    Blocks outside every stack (FLUX IN, SDXL EMB/FINAL) have no LR-weight arg; only lbw_weights sets them.
    """
    if len(blocks) != arch.num_blocks:
        raise ValueError(f"{arch.name.upper()} has {arch.num_blocks} blocks, got {len(blocks)} weights")

    def join(values: Sequence[float]) -> str:
        return ",".join(format_number(v) for v in values)

    return {stack.lr_weight_key: join(blocks[stack.start : stack.stop]) for stack in arch.stacks}


def lbw_to_network_args(arch: Architecture, text: str, key: str = "lbw_weights") -> Dict[str, str]:
    """An LBW preset or vector -> per-stack network_args (BASE is not a block LR; see parse_lbw)."""
    return block_weights_to_network_args(arch, parse_lbw(arch, text, key).blocks)
