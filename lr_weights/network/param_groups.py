"""Optimizer param groups and their descriptions (CONTRACT §5), for every network kind.

A network says which parts it has (networks decide their descriptions: `textencoder`, `unet_block3`
for the U-Net kind, `textencoder 1`, `unet D03` for the DiT kind); here they become groups: one
per text-encoder part; for the U-Net / flow model one group per block (in order of first
appearance) when block LR weights are set, else one `unet` group. `network_reg_lrs` regexes take
their modules into groups of their own. LoRA+ moves each group's `lora_up` weights into a twin
group right after it, with lr x ratio. Groups with no or zero LR are left out, as upstream does.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParamGroup:
    description: str
    lr: float
    params: Tuple[nn.Parameter, ...]

    def as_optimizer_group(self) -> Dict[str, object]:
        return {"params": list(self.params), "lr": self.lr}


def _split_group(description: str, modules: Sequence[nn.Module], lr: Optional[float], plus_ratio: Optional[float]) -> List[ParamGroup]:
    if lr is None or lr == 0:
        if modules:
            logger.info("%s: learning rate is %s, its parameters are not trained.", description, lr)
        return []
    base: List[nn.Parameter] = []
    plus: List[nn.Parameter] = []
    for module in modules:
        for name, param in module.named_parameters():
            if not param.requires_grad:  # LoRA-FA's frozen lora_down: no optimizer state for it
                continue
            (plus if plus_ratio is not None and name.startswith("lora_up") else base).append(param)
    groups = []
    if base:
        groups.append(ParamGroup(description, lr, tuple(base)))
    if plus:
        groups.append(ParamGroup(description + " plus", lr * plus_ratio, tuple(plus)))
    return groups


# (description, modules, LR): the modules of one optimizer group (and its LoRA+ twin).
Part = Tuple[str, Sequence[nn.Module], Optional[float]]
# (stem, parts, LoRA+ ratio): parts whose `network_reg_lrs` matches are shared (`<stem> reg_lr_<i>`).
Scope = Tuple[str, Sequence[Part], Optional[float]]


def encoder_lr(lr: Optional[float], default_lr: Optional[float], weight: float) -> Optional[float]:
    """An encoder's LR: its own (else the default) x its LBW weight (BASE, or CLIP / T5)."""
    lr = lr if lr is not None else default_lr
    return lr if lr is None or weight == 1.0 else lr * weight


def block_parts(
    modules: Sequence[nn.Module], blocks: Sequence[int], block_lr_weights: Sequence[float], base_lr: Optional[float], describe: Callable[[int], str]
) -> List[Part]:
    """One part per block, in order of first appearance, at base_lr x the block's weight; a module
    whose block is unknown trains at the plain LR (CONTRACT §7.7)."""
    by_block: Dict[int, List[nn.Module]] = {}
    for module, block in zip(modules, blocks):
        by_block.setdefault(block, []).append(module)
    parts: List[Part] = []
    for block, members in by_block.items():
        weight = block_lr_weights[block] if 0 <= block < len(block_lr_weights) else 1.0
        parts.append((describe(block), members, None if base_lr is None else base_lr * weight))
    return parts


def unet_parts(
    modules: Sequence[nn.Module], blocks: Sequence[int], block_lr_weights: Optional[Sequence[float]], base_lr: Optional[float], describe: Callable[[int], str]
) -> List[Part]:
    """One `unet` part without block LR weights, else one part per block."""
    if block_lr_weights is None:
        return [("unet", modules, base_lr)]
    return block_parts(modules, blocks, block_lr_weights, base_lr, describe)


def scoped_groups(scopes: Sequence[Scope], reg_lrs: Sequence[Tuple[str, float]] = ()) -> List[ParamGroup]:
    """The groups of each scope in order. Within a scope, modules a `network_reg_lrs` regex matches
    (first match wins) go to `<stem> reg_lr_<i>` groups at that absolute LR, before the others (as
    upstream lora_flux, ordered as it sorts the group names); the rest stay in their part's group."""
    groups: List[ParamGroup] = []
    for stem, parts, plus_ratio in scopes:
        matched: Dict[int, list] = {}
        rest = []
        for description, modules, lr in parts:
            unmatched = []
            for module in modules:
                index = _regex_index(reg_lrs, module.lora_name)
                if index is None:
                    unmatched.append(module)
                else:
                    matched.setdefault(index, []).append(module)
            rest.append((description, unmatched, lr))
        for index in sorted(matched, key=lambda i: f"reg_lr_{i}"):
            groups += _split_group(f"{stem} reg_lr_{index}", matched[index], reg_lrs[index][1], plus_ratio)
        for description, modules, lr in rest:
            if modules:
                groups += _split_group(description, modules, lr, plus_ratio)
    return groups


def _regex_index(reg_lrs: Sequence[Tuple[str, float]], lora_name: str) -> Optional[int]:
    for index, (pattern, _) in enumerate(reg_lrs):
        if re.search(pattern, lora_name):
            return index
    return None


def merge_param_groups(groups: Sequence[ParamGroup]) -> List[ParamGroup]:
    """One group per distinct U-Net LR (LoRA+ twins apart), at the place of its first member.

    An optimizer pays host time per group (docs/perf.md); blocks that share an LR need not pay it
    twice. The update of each parameter is unchanged. Text-encoder groups are left as they are,
    since hosts log and schedule them apart. Descriptions are joined: `unet_block1,2,4 plus`.
    """
    merged: List[ParamGroup] = []
    members: Dict[Tuple[float, bool], int] = {}
    names: Dict[int, List[str]] = {}
    for group in groups:
        plus = group.description.endswith(" plus")
        if not group.description.startswith("unet"):
            merged.append(group)
            continue
        key = (group.lr, plus)
        if key not in members:
            members[key] = len(merged)
            names[len(merged)] = [group.description]
            merged.append(group)
            continue
        index = members[key]
        names[index].append(group.description)
        first = merged[index]
        merged[index] = ParamGroup(first.description, first.lr, first.params + group.params)
    for index, descriptions in names.items():
        if len(descriptions) > 1:
            merged[index] = ParamGroup(_joined(descriptions), merged[index].lr, merged[index].params)
    return merged


def _joined(descriptions: Sequence[str]) -> str:
    suffix = " plus" if descriptions[0].endswith(" plus") else ""
    stems = [d[: len(d) - len(suffix)] for d in descriptions]
    if all(stem.startswith("unet_block") for stem in stems):
        return "unet_block" + ",".join(stem[len("unet_block") :] for stem in stems) + suffix
    return ",".join(stems) + suffix


def per_encoder_lrs(value, text_encoder_labels: Sequence[str]) -> Optional[List[Optional[float]]]:
    """One LR per text encoder when `--text_encoder_lr` has two or more values and the network's
    modules are of two or more numbered encoders (labels TE1, TE2: SDXL's `lora_te1_`, `lora_te2_`);
    None otherwise, meaning "one textencoder group with the first value", exactly as without
    per-encoder LRs.
    """
    if not isinstance(value, (list, tuple)) or len(value) < 2 or not text_encoder_labels:
        return None
    encoders = sorted(set(text_encoder_labels) - {"TE"})
    if len(encoders) < 2:
        logger.warning("--text_encoder_lr has %d values but this model has one text encoder; it trains at the first, %s.", len(value), value[0])
        return None
    if len(value) > len(encoders):
        logger.warning("--text_encoder_lr has %d values for %d text encoders; the values after the %d-th are ignored.", len(value), len(encoders), len(encoders))
    lrs = list(value[: len(encoders)])
    logger.info("text encoder LRs: %s", ", ".join(f"textencoder {i} = {lr}" for i, lr in enumerate(lrs, start=1)))
    return lrs


def first_lr(value) -> Optional[float]:
    """Hosts pass one LR, None, or (from TOML configs) a list of them: use the first."""
    if isinstance(value, (list, tuple)):
        return None if len(value) == 0 else value[0]
    return value

