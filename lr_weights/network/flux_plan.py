"""Which FLUX layers get an adapter, with which dim/alpha, in upstream lora_flux's creation order.

Order (it decides which tensors a seed gives): CLIP-L, T5-XXL (train_t5xxl), every Linear of the
double and single blocks in model order, then the in_dims layers filter by filter (img, time,
vector, guidance, txt). For each layer the dim is, as upstream: the first `network_reg_dims` regex
that matches (alpha = network_alpha); else the block's dim (`double_block_dims` /
`single_block_dims`, else network_dim; in_dims for the in layers) replaced by the first component
dim that names the layer (`img_attn_dim` ...), and set to 0 by `train_*_block_indices` when the
block is not selected. Dim 0 means no module. On top of upstream: a block whose LR weight is 0
(block_lr_zero_threshold, a 0 in double/single_lr_weight or lbw_weights) gets no module at all, and
an encoder whose LBW weight (CLIP, T5) is 0 gets none either.
"""

from __future__ import annotations

import logging
import re
from typing import List, Optional, Sequence, Tuple

from torch import nn

from lr_weights.archs import FLUX
from lr_weights.archs.flux import IN_FILTERS
from lr_weights.errors import NetworkArgError
from lr_weights.adapters.split import qkv_split_dims
from lr_weights.args.flux_settings import TYPE_DIM_KEYS, FluxSettings
from lr_weights.adapters.lora import max_rank
from lr_weights.network.lora_network import ModulePlan
from lr_weights.network.targets import Target, flux_block_targets, flux_filtered_targets, flux_text_encoder_targets

logger = logging.getLogger(__name__)

BLOCK_CLASSES = {"all": ("DoubleStreamBlock", "SingleStreamBlock"), "double": ("DoubleStreamBlock",), "single": ("SingleStreamBlock",)}


def find_flux_targets(text_encoders: Sequence[Optional[nn.Module]], flux: Optional[nn.Module], settings: FluxSettings) -> Tuple[List[Target], List[Target], List[Tuple[int, Target]]]:
    """(text-encoder targets, block targets, [(in_dims position, target)]) in creation order."""
    te = flux_text_encoder_targets(list(text_encoders or []), settings.train_t5xxl)
    blocks = flux_block_targets(flux, FLUX, BLOCK_CLASSES[settings.train_blocks])
    inputs: List[Tuple[int, Target]] = []
    if settings.in_dims is not None:
        for position, name_filter in enumerate(IN_FILTERS):
            inputs += [(position, t) for t in flux_filtered_targets(flux, FLUX, name_filter)]
    return te, blocks, inputs


def _regex_dim(settings: FluxSettings, lora_name: str) -> Optional[int]:
    for pattern, dim in settings.reg_dims:
        if re.search(pattern, lora_name):
            return dim
    return None


def _dim_of(settings: FluxSettings, target: Target, default_dim: int, default_alpha: float, default_key: str) -> Tuple[int, float, str]:
    """(dim, alpha, the arg that decided the dim) of one flow-model layer, upstream's precedence."""
    name = target.lora_name
    reg = _regex_dim(settings, name)
    if reg is not None:
        return reg, settings.alpha, "network_reg_dims"
    dim, key = default_dim, default_key
    for (type_key, identifiers), type_dim in zip(TYPE_DIM_KEYS, settings.type_dims):
        if type_dim is not None and all(i in name for i in identifiers):
            dim, key = type_dim, type_key
            break
    if dim and ("double" in name or "single" in name):
        stack = FLUX.stack_of(target.block)
        if stack is not None:
            selected = settings.train_double if stack.name == "double" else settings.train_single
            if selected is not None and not selected[target.block - stack.start]:
                dim = 0
    return dim, default_alpha, key


def plan_flux(settings: FluxSettings, te_targets: Sequence[Target], block_targets: Sequence[Target], in_targets: Sequence[Tuple[int, Target]]) -> List[ModulePlan]:
    plans: List[Tuple[ModulePlan, str]] = []
    for target in te_targets:
        if settings.text_encoder_weight(FLUX.text_encoder_label(target.lora_name)) == 0:
            continue
        reg = _regex_dim(settings, target.lora_name)
        dim, alpha, key = (reg, settings.alpha, "network_reg_dims") if reg is not None else (settings.dim, settings.alpha, "network_dim")
        if dim:
            plans.append((ModulePlan(target, dim, alpha), key))

    def add_flow(target: Target, dim: int, alpha: float, key: str) -> None:
        if dim == 0 or settings.block_weight(target.block) == 0:
            return
        split = qkv_split_dims(target.lora_name, target.layer) if settings.split_qkv else None
        plans.append((ModulePlan(target, dim, alpha, split), key))

    for target in block_targets:
        base_dim, base_alpha = settings.base_dim_alpha(target.block)
        stack = FLUX.stack_of(target.block)
        default_key = stack.dims_key if settings.block_dims is not None and stack is not None else "network_dim"
        add_flow(target, *_dim_of(settings, target, base_dim, base_alpha, default_key))
    for position, target in in_targets:
        add_flow(target, *_dim_of(settings, target, settings.in_dims[position], settings.alpha, "in_dims"))

    for plan, key in plans:
        limit = max_rank(plan.target.layer)
        if plan.dim > limit:
            raise NetworkArgError(key, plan.dim, f"a dim <= {limit} for {plan.target.lora_name} (rank {plan.dim} exceeds what a {tuple(plan.target.layer.weight.shape)} layer can hold)")
    if settings.verbose:
        for plan, _ in plans:
            logger.info("\t%-50s %d, %g", plan.target.lora_name, plan.dim, plan.alpha)
    return [plan for plan, _ in plans]
