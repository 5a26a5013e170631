"""Optimizer param groups and their descriptions (CONTRACT §5).

One group for the text encoder(s); for the U-Net one group per block (in order of first
appearance) when block LR weights are set, else one `unet` group. LoRA+ moves each group's
`lora_up` weights into a twin group right after it, with lr x ratio. Groups with no or zero LR
are left out, as upstream does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from torch import nn

from lr_weights.args.scalars import parse_learning_rate
from lr_weights.errors import NetworkArgError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParamGroup:
    description: str
    lr: float
    params: Tuple[nn.Parameter, ...]

    def as_optimizer_group(self) -> Dict[str, object]:
        return {"params": list(self.params), "lr": self.lr}


def check_learning_rates(text_encoder_lr, unet_lr, default_lr, text_encoder_lrs=None) -> None:
    """Refuse a negative LR (or a non-number) by its sd-scripts option name, before any group is
    built; torch's optimizers would refuse it only later, with no option named."""
    for key, value in (("text_encoder_lr", text_encoder_lr), ("unet_lr", unet_lr), ("learning_rate", default_lr)):
        parse_learning_rate(key, value)
    for lr in text_encoder_lrs or ():
        parse_learning_rate("text_encoder_lr", lr)


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


def build_param_groups(
    text_encoder_modules: Sequence[nn.Module],
    unet_modules: Sequence[nn.Module],
    unet_blocks: Sequence[int],
    block_lr_weights: Optional[Sequence[float]],
    text_encoder_lr: Optional[float],
    unet_lr: Optional[float],
    default_lr: Optional[float],
    loraplus_text_encoder_ratio: Optional[float] = None,
    loraplus_unet_ratio: Optional[float] = None,
    text_encoder_lr_weight: float = 1.0,
    text_encoder_lrs: Optional[Sequence[Optional[float]]] = None,
) -> List[ParamGroup]:
    """The groups in upstream's order. `unet_blocks[i]` is the block index of `unet_modules[i]`.

    `text_encoder_lr_weight` (LBW's BASE) scales the text-encoder LR. `text_encoder_lrs` (see
    per_encoder_lrs) gives encoder i, the modules named `lora_te{i}_`, its own group `textencoder {i}`.
    """
    check_learning_rates(text_encoder_lr, unet_lr, default_lr, text_encoder_lrs)
    groups: List[ParamGroup] = []
    if text_encoder_modules:

        def te_lr(lr: Optional[float]) -> Optional[float]:
            lr = lr if lr is not None else default_lr
            return lr if lr is None or text_encoder_lr_weight == 1.0 else lr * text_encoder_lr_weight

        if not text_encoder_lrs:
            groups += _split_group("textencoder", text_encoder_modules, te_lr(text_encoder_lr), loraplus_text_encoder_ratio)
        for number, lr in enumerate(text_encoder_lrs or (), start=1):
            own = [m for m in text_encoder_modules if m.lora_name.startswith(f"lora_te{number}_")]
            groups += _split_group(f"textencoder {number}", own, te_lr(lr), loraplus_text_encoder_ratio)

    if not unet_modules:
        return groups
    base_lr = unet_lr if unet_lr is not None else default_lr
    if block_lr_weights is None:
        return groups + _split_group("unet", unet_modules, base_lr, loraplus_unet_ratio)
    if base_lr is None:
        raise NetworkArgError("unet_lr", None, "a U-Net learning rate (--unet_lr or --learning_rate) for block LR weights to scale")

    by_block: Dict[int, List[nn.Module]] = {}
    for module, block in zip(unet_modules, unet_blocks):
        by_block.setdefault(block, []).append(module)
    for block, modules in by_block.items():
        # A module whose block is unknown trains at the plain U-Net LR (CONTRACT §7.7).
        weight = block_lr_weights[block] if 0 <= block < len(block_lr_weights) else 1.0
        groups += _split_group(f"unet_block{block}", modules, base_lr * weight, loraplus_unet_ratio)
    return groups


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


def per_encoder_lrs(value, text_encoder_names: Sequence[str]) -> Optional[List[Optional[float]]]:
    """One LR per text encoder when `--text_encoder_lr` has two or more values and the network has
    SDXL's two encoders (`lora_te1_`, `lora_te2_`); None otherwise, meaning "one textencoder group
    with the first value", exactly as without per-encoder LRs.
    """
    if not isinstance(value, (list, tuple)) or len(value) < 2 or not text_encoder_names:
        return None
    encoders = sorted({int(name[len("lora_te")]) for name in text_encoder_names if name[len("lora_te") : len("lora_te") + 1].isdigit()})
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

