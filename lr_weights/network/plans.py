"""Which modules a network gets, with which dim and alpha, decided before it is built (CONTRACT §3):
from the settings (`create_network`) or from what a file holds (`create_network_from_weights`).

The U-Net kind plans here; the DiT kind's planning (dit_plan.py) makes the same `ModulePlan`s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Mapping, MutableMapping, Optional, Sequence, Tuple

import torch

from lr_weights.adapters.lora import max_rank
from lr_weights.archs.base import Architecture
from lr_weights.args.settings import NetworkSettings
from lr_weights.errors import NetworkArgError
from lr_weights.files.loading import describe, dims_and_alphas, rename_foreign_keys, shape_mismatches
from lr_weights.network.targets import Target

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModulePlan:
    """One adapter to build: where, and with which dim/alpha."""

    target: Target
    dim: int
    alpha: float
    split_dims: Optional[Tuple[int, ...]] = None  # FLUX split_qkv: one LoRA per output part


def plan_from_settings(settings: NetworkSettings, text_encoder_targets: Sequence[Target], unet_targets: Sequence[Target]) -> List[ModulePlan]:
    """Adapters for `create_network`, in creation order (text encoders, then U-Net)."""
    plans = []
    te = settings.text_encoder_dim_alpha()
    # LBW's BASE = 0 (lbw_weights=): the text encoders train at LR 0, so they get no modules.
    for target in text_encoder_targets if settings.options.text_encoder_lr_weight != 0 else ():
        plans.append(ModulePlan(target, te.dim, te.alpha))
    unknown = []
    for target in unet_targets:
        if target.block < 0 and settings.block_mode:
            unknown.append(target.lora_name)
        chosen = settings.unet_dim_alpha(target.block, target.is_conv_kxk)
        if chosen is None or chosen.dim == 0:
            continue
        plans.append(ModulePlan(target, chosen.dim, chosen.alpha))
    if unknown:
        logger.warning(
            "%d U-Net layers are in no known %s block; they train with weight 1.0 and the base dim: %s",
            len(unknown), settings.arch.name.upper(), ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else ""),
        )
    _check_ranks(plans, settings)
    return plans


def _check_ranks(plans: Sequence[ModulePlan], settings: NetworkSettings) -> None:
    for plan in plans:
        limit = max_rank(plan.target.layer)
        if plan.dim <= limit:
            continue
        if not plan.target.is_unet:
            key, value = "network_dim", settings.dim
        elif plan.target.is_conv_kxk:
            key, value = ("conv_block_dims", settings.conv_block_dims) if settings.block_mode and plan.target.block >= 0 else ("conv_dim", settings.conv_dim)
        else:
            key, value = ("block_dims", settings.block_dims) if settings.block_mode and plan.target.block >= 0 else ("network_dim", settings.dim)
        if isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        raise NetworkArgError(
            key, value, f"a dim <= {limit} for {plan.target.lora_name} (rank {plan.dim} exceeds what a {tuple(plan.target.layer.weight.shape)} layer can hold)"
        )


def plan_from_weights(
    arch: Architecture, weights: Mapping[str, torch.Tensor], text_encoder_targets: Sequence[Target], unet_targets: Sequence[Target]
) -> Tuple[List[ModulePlan], List[str]]:
    """Adapters for the modules a file holds: dim = rows of lora_down, alpha from the file (absent -> dim).

    Returns the plans and the file's module names that match no layer of the model. Foreign-named
    keys are renamed in place by the arch (SDXL: diffusers' U-Net names), as upstream does. A file whose
    tensors do not fit the model, or of which nothing fits, is a ValueError naming keys and shapes.
    """
    if isinstance(weights, MutableMapping):
        rename_foreign_keys(weights, arch)
    dims, alphas = dims_and_alphas(weights)
    plans = []
    for target in list(text_encoder_targets) + list(unet_targets):
        if target.lora_name in dims:
            dim = dims[target.lora_name]
            plans.append(ModulePlan(target, dim, alphas.get(target.lora_name, float(dim))))
    known = {p.target.lora_name for p in plans}
    unmatched = sorted(set(dims) - known)
    if unmatched and not plans:
        raise ValueError(
            f"none of the {len(unmatched)} LoRA modules in the file matches a layer of this model (a LoRA for another "
            f"architecture?), e.g. {', '.join(unmatched[:3])}; this model's layers are named like "
            f"{', '.join(t.lora_name for t in list(unet_targets)[:1] + list(text_encoder_targets)[:1])}"
        )
    problems = shape_mismatches(plans, weights)
    if problems:
        raise ValueError(f"the file does not fit this model (a LoRA for another architecture?): {len(problems)} tensors differ: {describe(problems)}")
    return plans, unmatched
