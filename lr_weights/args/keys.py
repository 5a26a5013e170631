"""Which network_args names an entry point reads: the known keys, near misses, other families' keys.

A key is checked before its value: an empty name or a likely typo is an error, another family's
arg is an error naming its entry point, any other unknown key is logged as not used. The values
are parsed afterwards by settings.py / dit_settings.py.
"""

from __future__ import annotations

import difflib
import logging
from typing import AbstractSet, Any, Dict, Iterable, Mapping, Optional

from lr_weights.archs import SD, keys_of_other_architectures
from lr_weights.archs.base import Architecture
from lr_weights.errors import NetworkArgError

logger = logging.getLogger(__name__)

LR_WEIGHT_KEYS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold")
BLOCK_LIST_KEYS = ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas")
# Kohya GUI v21.7.x wrote these names; sd-scripts never read them (CONTRACT §7.5).
GUI_ALIASES = {"conv_dims": "conv_block_dims", "conv_alphas": "conv_block_alphas"}
# Opt-in performance switches (docs/perf.md): LoRA-FA, and one optimizer group per distinct LR.
PERF_KEYS = ("fa", "merge_lr_groups")
# Read only by lr_weights.dylora; lr_weights.lora says so when it gets one.
DYLORA_KEYS = ("unit",)
KNOWN_KEYS = frozenset(
    ("conv_dim", "conv_alpha", "dropout", "rank_dropout", "module_dropout")
    + DYLORA_KEYS
    + LR_WEIGHT_KEYS
    + ("lbw_weights",)
    + BLOCK_LIST_KEYS
    + ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio")
    + PERF_KEYS
)


def refuse_foreign_keys(kwargs: Mapping[str, Any], arch: Architecture, known: frozenset) -> None:
    """An arg another family's entry point reads (double_lr_weight given to lr_weights.lora,
    down_lr_weight given to lr_weights.flux) is an error naming the arg, never silently ignored."""
    foreign = keys_of_other_architectures(arch)
    for key, value in kwargs.items():
        if key in foreign and key not in known:
            owner = foreign[key]
            raise NetworkArgError(
                key, value,
                f"an arg of {owner.entry_point} ({owner.title}); {arch.entry_point} ({arch.title}) does not read it. "
                f"Train {owner.title} with --network_module {owner.entry_point}, or leave {key} out",
            )


def normalise_kwargs(kwargs: Mapping[str, Any]) -> Dict[str, Any]:
    """lr_weights.lora's keys: accept GUI-era aliases, refuse likely typos, warn about keys we do not use."""
    refuse_foreign_keys(kwargs, SD, KNOWN_KEYS)
    args = dict(kwargs)
    for alias, key in GUI_ALIASES.items():
        if alias in args:
            value = args.pop(alias)
            if key in args:
                logger.warning("%s is an old Kohya GUI name for %s; both were given, %s is used.", alias, key, key)
                continue
            logger.warning("%s is an old Kohya GUI name for %s (sd-scripts ignored it); using it as %s.", alias, key, key)
            args[key] = value
    check_unknown_keys(args, KNOWN_KEYS, "lr_weights", logger)
    return args


def check_unknown_keys(args: Mapping[str, Any], known: AbstractSet[str], module: str, log: logging.Logger) -> None:
    """An unknown key that is a near miss of a known one is a NetworkArgError (a typo must not train
    with the default); any other is logged on `log` as not used by `module`, and left in place.
    An empty key (`=1`) is an error: nothing can have been meant by it."""
    for key in list(args):
        if key in known:
            continue
        if not str(key).strip():
            raise NetworkArgError("network_args", f"{key}={args[key]}", "KEY=VALUE pairs with a name before the '=' (e.g. down_lr_weight=sine)")
        close = near_miss(key, known)
        if close:
            raise NetworkArgError(key, args[key], f"a known network arg (names are case-sensitive): did you mean {close}?")
        log.warning("network arg %s=%r is not used by %s and is ignored.", key, args[key], module)


def near_miss(key: str, known: Iterable[str]) -> Optional[str]:
    """The known name `key` was most likely meant to be (another case, a typo), or None."""
    by_lower = {name.lower(): name for name in known}
    folded = key.strip().lower().replace("-", "_")
    if folded in by_lower:
        return by_lower[folded]
    close = difflib.get_close_matches(folded, sorted(by_lower), n=1, cutoff=0.85)
    return by_lower[close[0]] if close else None


def typed_name(key: str, kwargs: Mapping[str, Any]) -> str:
    """The name the user gave for `key`: its GUI-era alias when only that was given."""
    if key not in kwargs:
        for alias, canonical in GUI_ALIASES.items():
            if canonical == key and alias in kwargs:
                return alias
    return key
