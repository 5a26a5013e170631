"""Optimizers that cannot honour per-group learning rates, found before any GPU time is spent.

Block LR weights, LoRA+ and a text-encoder LR different from the U-Net's all work through one
optimizer param group per LR. Three optimizer families do not take that:

- Adafactor with `relative_step=True` (sd-scripts' default for Adafactor): sd-scripts removes the
  `lr` of every group before building it ("unet_lr and text_encoder_lr are ignored"), so every
  block trains at Adafactor's own relative step size.
- D-Adaptation (DAdaptAdam, DAdaptLion, ... in dadaptation 3.2) and Prodigy (prodigyopt 1.1) raise
  `RuntimeError: Setting different lr values in different parameter groups is only supported for
  values of 0` at the first optimizer step: all groups must share one LR (0 freezes a group).

sd-scripts hands the network its parsed arguments through `prepare_network(args)` before it builds
the optimizer; `optimizer_warnings` reads `optimizer_type`, the old `use_8bit_adam` /
`use_lion_optimizer` switches and `optimizer_args` from there. Pure: returns the messages.
"""

from __future__ import annotations

import ast
from typing import Any, List, Optional, Sequence


def optimizer_name(args: Any) -> str:
    """sd-scripts' choice of optimizer, lower case (`adamw` when nothing is given)."""
    if getattr(args, "use_8bit_adam", False):
        return "adamw8bit"
    if getattr(args, "use_lion_optimizer", False):
        return "lion"
    name = getattr(args, "optimizer_type", None) or "AdamW"
    return str(name).lower()


def _optimizer_arg(args: Any, key: str) -> Optional[Any]:
    for item in getattr(args, "optimizer_args", None) or ():
        name, _, value = str(item).partition("=")
        if name.strip() != key:
            continue
        try:
            return ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            return value.strip()
    return None


def _family(name: str) -> Optional[str]:
    short = name.rsplit(".", 1)[-1]
    if "prodigy" in short:
        return "prodigy"
    if short.startswith("dadapt"):
        return "dadaptation"
    if short == "adafactor":
        return "adafactor"
    return None


def optimizer_warnings(args: Any, group_lr_features: Sequence[str]) -> List[str]:
    """Warnings for `args` when the network uses per-group LRs; `group_lr_features` names them
    (e.g. "block LR weights", "LoRA+"). Empty when the optimizer honours them or none are used."""
    if not group_lr_features:
        return []
    name = optimizer_name(args)
    family = _family(name)
    uses = " and ".join(group_lr_features)
    if family == "adafactor":
        relative_step = _optimizer_arg(args, "relative_step")
        warmup_init = _optimizer_arg(args, "warmup_init")
        if relative_step is False and not warmup_init:
            return []
        return [
            f"Adafactor with relative_step=True (sd-scripts' default) ignores per-group learning rates: sd-scripts "
            f"drops every group's lr, so your {uses} have no effect and every block trains at Adafactor's own step size. "
            "To keep them, pass --optimizer_args scale_parameter=False relative_step=False warmup_init=False together "
            "with --learning_rate/--unet_lr, or use AdamW/AdamW8bit/Lion."
        ]
    if family in ("dadaptation", "prodigy"):
        label = "Prodigy" if family == "prodigy" else "D-Adaptation"
        return [
            f"{label} ({getattr(args, 'optimizer_type', name)}) needs one learning rate for all param groups: with your "
            f"{uses} it stops at the first optimizer step with 'Setting different lr values in different parameter groups "
            "is only supported for values of 0'. Either use AdamW/AdamW8bit/Lion with normal learning rates, or keep "
            f"{label} and drop the per-group LRs: block weights of only 0 and 1 (0 prunes a block; use block_dims to "
            "give blocks less capacity), no LoRA+ ratio, and the same text_encoder_lr as unet_lr."
        ]
    return []
