"""Block LR weight specs -> one multiplier per block.

Pure functions. The rules are sd-scripts' (`get_block_lr_weight`), measured on the real code:
presets `name[+b]` for the down/up lists, comma lists where an empty entry means 0, short lists
padded with 1.0 and long ones truncated (each with a warning), an absent list meaning all 1.0, and
the zero threshold compared with the weight alone. Where upstream crashes or guesses, we raise a
ValueError that names the key and the value (CONTRACT §7.1-§7.4, §7.12).
"""

from __future__ import annotations

import logging
import math
import re
from typing import List, Mapping, Optional, Sequence, Tuple, Union

from lr_weights.archs.blocks import Architecture
from lr_weights.errors import NetworkArgError

logger = logging.getLogger(__name__)

PRESET_NAMES = ("sine", "cosine", "linear", "reverse_linear", "zeros")

_PRESET = re.compile(r"^(?P<name>[a-z_]+)(?:(?P<sign>[+-])(?P<offset>.*))?$")


def _ramp(n: int) -> List[float]:
    return [i / (n - 1) for i in range(n)]


def preset_values(name: str, n: int, offset: float = 0.0) -> List[float]:
    """The n values of a preset, shallow -> deep, plus the offset (upstream's formulas, any n >= 2)."""
    if name == "sine":
        return [math.sin(math.pi * t / 2) + offset for t in _ramp(n)]
    if name == "cosine":
        return [math.sin(math.pi * t / 2) + offset for t in reversed(_ramp(n))]
    if name == "linear":
        return [t + offset for t in _ramp(n)]
    if name == "reverse_linear":
        return [t + offset for t in reversed(_ramp(n))]
    if name == "zeros":
        return [0.0 + offset] * n
    raise KeyError(name)


def parse_float(key: str, text: str, *, what: str = "a number") -> float:
    """float(text) that refuses non-numbers and non-finite values with a message naming the key."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise NetworkArgError(key, text, what) from None
    if not math.isfinite(value):
        raise NetworkArgError(key, text, f"{what} (finite; nan and inf are not allowed)")
    return value


def parse_float_list(key: str, text: str) -> List[float]:
    """Comma-separated floats; an empty entry means 0 (as upstream)."""
    values = []
    for position, entry in enumerate(str(text).split(","), start=1):
        entry = entry.strip()
        try:
            values.append(0.0 if entry == "" else parse_float(key, entry))
        except NetworkArgError as error:
            raise NetworkArgError(key, text, f"comma-separated finite numbers (entry {position} is {entry!r}: {error.expected})") from None
    return values


_FORMS = (
    "a preset name[+offset] or name-offset (presets: " + ", ".join(PRESET_NAMES) + "; e.g. sine+.25, cosine-0.1), "
    "a single number for every block, or a comma-separated list of numbers"
)


def parse_down_up_spec(key: str, text: str, n: int) -> List[float]:
    """Expand one down_lr_weight/up_lr_weight value into numbers (not yet padded or thresholded)."""
    text = str(text).strip()
    if "," in text:
        return parse_float_list(key, text)
    if text == "":
        raise NetworkArgError(key, text, _FORMS)
    if _looks_numeric(text):
        # A single number applies to every block of the list (upstream crashes here, CONTRACT §7.1).
        return [parse_float(key, text)] * n
    match = _PRESET.match(text)
    if match is None or match.group("name") not in PRESET_NAMES:
        raise NetworkArgError(key, text, _FORMS)
    offset = 0.0
    if match.group("sign") is not None:
        offset_text = match.group("offset")
        if offset_text.strip() == "":
            raise NetworkArgError(key, text, "an offset after the sign, e.g. " + match.group("name") + "+.25")
        try:
            offset = parse_float(key, offset_text)
        except NetworkArgError:
            raise NetworkArgError(key, text, f"a number after the sign, e.g. {match.group('name')}+.25") from None
        if match.group("sign") == "-":
            offset = -offset
    return preset_values(match.group("name"), n, offset)


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def fit_length(key: str, values: List[float], n: int) -> List[float]:
    """Pad a short list with 1.0 or truncate a long one, with upstream's warnings."""
    if len(values) > n:
        logger.warning("%s has %d values but the model has %d blocks there; the values after the %d-th are ignored.", key, len(values), n, n)
        return values[:n]
    if len(values) < n:
        logger.warning("%s has %d values but the model has %d blocks there; the missing ones are filled with 1.0.", key, len(values), n)
        return values + [1.0] * (n - len(values))
    return values


def apply_threshold(values: Sequence[float], threshold: float) -> List[float]:
    """Upstream's rule: a weight survives only if weight > threshold (weight alone, not weight x LR)."""
    return [w if w > threshold else 0.0 for w in values]


def expand_part(key: str, value: Union[None, str, float, Sequence[float]], n: int, *, presets: bool, exact: bool = False) -> Optional[List[float]]:
    """One of down/mid/up as n numbers (padded/truncated), before the threshold; None if not given.

    `value` is the network_args string, or already-parsed numbers (as the public
    get_block_lr_weight receives them from other tools).
    """
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        values = []
        for position, entry in enumerate(value, start=1):
            try:
                values.append(parse_float(key, str(entry).strip()))
            except NetworkArgError as error:
                raise NetworkArgError(key, value, f"finite numbers (entry {position} is {entry!r}: {error.expected})") from None
    else:
        # A number means what its text means: for down/up, one weight for every block.
        text = str(value)
        values = parse_down_up_spec(key, text, n) if presets else parse_float_list(key, text)
    if exact and len(values) != n:
        forms = "a preset (sine, cosine, linear, reverse_linear, zeros, optionally +offset), one number, or " if presets else ""
        raise NetworkArgError(key, value, f"{forms}exactly {n} comma-separated values, one per block of the loaded model; got {len(values)}")
    return fit_length(key, values, n)


def resolve_block_lr_weights(
    arch: Architecture,
    down: Union[None, str, Sequence[float]],
    mid: Union[None, str, float, Sequence[float]],
    up: Union[None, str, Sequence[float]],
    threshold: Union[None, str, float] = None,
) -> Optional[Tuple[float, ...]]:
    """The flat per-block multipliers sd-scripts would use (25 for SD, 23 for SDXL), or None."""
    return resolve_stack_lr_weights(arch, {"down_lr_weight": down, "mid_lr_weight": mid, "up_lr_weight": up}, threshold)


def resolve_stack_lr_weights(
    arch: Architecture,
    given: Mapping[str, Union[None, str, float, Sequence[float]]],
    threshold: Union[None, str, float] = None,
) -> Optional[Tuple[float, ...]]:
    """The flat per-block multipliers from each stack's LR-weight arg (`given[stack.lr_weight_key]`),
    or None when no stack's arg is given.

    Upstream's expansion, nothing more: values may be negative when the threshold lets them
    through; refusing settings that cannot train is the caller's job (settings.py).
    """
    if all(given.get(stack.lr_weight_key) is None for stack in arch.stacks):
        return None
    threshold_value = 0.0 if threshold is None else parse_float("block_lr_zero_threshold", str(threshold).strip())

    flat = [1.0] * arch.num_blocks
    for stack in arch.stacks:
        values = expand_part(stack.lr_weight_key, given.get(stack.lr_weight_key), stack.size, presets=stack.presets, exact=stack.exact_length)
        # A list that is not given stays all 1.0 and is never thresholded (as upstream).
        if values is not None:
            flat[stack.start : stack.stop] = apply_threshold(values, threshold_value)
    return tuple(flat)
