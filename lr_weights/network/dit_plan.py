"""Which layers of a DiT-kind model get an adapter, with which dim/alpha, in upstream lora_flux's
creation order. Everything model-specific (block classes, component dims, in layers, block
selections, split rules, text encoders) is read from the family's architecture (archs/dit.py).

Order (it decides which tensors a seed gives): the text encoders (FLUX: CLIP-L, then T5-XXL with
train_t5xxl), every Linear of the blocks in model order, then the in layers filter by filter (FLUX
in_dims: img, time, vector, guidance, txt). For each layer the dim is, as upstream: the first
`network_reg_dims` regex that matches (alpha = network_alpha); else the block's dim (the stack's
`<stack>_block_dims`, else network_dim; in_dims for the in layers) replaced by the first component
dim that names the layer (`img_attn_dim` ...), and set to 0 by a block selection
(`train_*_block_indices`) when the block is not selected. Dim 0 means no module. On top of
upstream: a block whose LR weight is 0 (block_lr_zero_threshold, a 0 in an LR-weight list or
lbw_weights) gets no module at all, and an encoder whose LBW weight (FLUX: CLIP, T5) is 0 gets none
either.
"""

from __future__ import annotations

import logging
import re
from typing import List, Optional, Sequence, Tuple

from torch import nn

from lr_weights.archs.base import Architecture
from lr_weights.errors import NetworkArgError
from lr_weights.adapters.split import split_dims
from lr_weights.args.dit_settings import DiTSettings
from lr_weights.adapters.lora import max_rank
from lr_weights.network.plans import ModulePlan
from lr_weights.network.targets import Target, block_targets, dit_text_encoder_targets, filtered_targets

logger = logging.getLogger(__name__)


def find_dit_targets(
    arch: Architecture, text_encoders: Sequence[Optional[nn.Module]], model: Optional[nn.Module], settings: DiTSettings
) -> Tuple[List[Target], List[Target], List[Tuple[int, Target]]]:
    """(text-encoder targets, block targets, [(in-layer position, target)]) in creation order."""
    te = dit_text_encoder_targets(list(text_encoders or []), arch, settings.flag_values)
    classes = arch.dit.block_classes(settings.train_blocks)
    filters = arch.dit.block_filters(settings.train_blocks)
    if filters:  # one pass per filter, in its order (lora_lumina's train_blocks)
        every = block_targets(model, arch, classes)
        blocks = [t for name_filter in filters for t in every if name_filter in t.lora_name]
    else:
        blocks = block_targets(model, arch, classes)
    inputs: List[Tuple[int, Target]] = []
    if settings.in_dims is not None:
        for position, name_filter in enumerate(arch.dit.in_filters):
            inputs += [(position, t) for t in filtered_targets(model, arch, name_filter)]
    return te, blocks, inputs


def _regex_dim(settings: DiTSettings, lora_name: str) -> Optional[int]:
    for pattern, dim in settings.reg_dims:
        if re.search(pattern, lora_name):
            return dim
    return None


def _dim_of(settings: DiTSettings, target: Target, default_dim: int, default_alpha: float, default_key: str) -> Tuple[int, float, str]:
    """(dim, alpha, the arg that decided the dim) of one flow-model layer, upstream's precedence."""
    name = target.lora_name
    reg = _regex_dim(settings, name)
    if reg is not None:
        return reg, settings.alpha, "network_reg_dims"
    dim, key = default_dim, default_key
    for (type_key, identifiers), type_dim in zip(settings.arch.dit.component_dims, settings.type_dims):
        if type_dim is not None and all(i in name for i in identifiers):
            dim, key = type_dim, type_key
            break
    if dim and not settings.selected(target.block):
        dim = 0
    return dim, default_alpha, key


def plan_dit(settings: DiTSettings, te_targets: Sequence[Target], block_targets: Sequence[Target], in_targets: Sequence[Tuple[int, Target]]) -> List[ModulePlan]:
    arch = settings.arch
    plans: List[Tuple[ModulePlan, str]] = []
    for target in te_targets:
        if settings.text_encoder_weight(arch.text_encoder_label(target.lora_name)) == 0:
            continue
        reg = _regex_dim(settings, target.lora_name)
        dim, alpha, key = (reg, settings.alpha, "network_reg_dims") if reg is not None else (settings.dim, settings.alpha, "network_dim")
        if dim:
            plans.append((ModulePlan(target, dim, alpha), key))

    def add_flow(target: Target, dim: int, alpha: float, key: str) -> None:
        if dim == 0 or settings.block_weight(target.block) == 0:
            return
        split = split_dims(arch.dit.split_rule(target.lora_name), target.lora_name, target.layer) if settings.split_qkv else None
        plans.append((ModulePlan(target, dim, alpha, split), key))

    for target in block_targets:
        base_dim, base_alpha = settings.base_dim_alpha(target.block)
        stack = arch.stack_of(target.block)
        default_key = stack.dims_key if settings.block_dims is not None and stack is not None else "network_dim"
        add_flow(target, *_dim_of(settings, target, base_dim, base_alpha, default_key))
    for position, target in in_targets:
        if arch.dit.in_conv and target.is_conv_kxk:
            # as lora_sd3: conv_dim/conv_alpha when given (even where the in dim is 0), else the in dim
            if settings.conv_dim is not None:
                add_flow(target, settings.conv_dim, settings.conv_alpha, "conv_dim")
            else:
                add_flow(target, settings.in_dims[position], settings.alpha, arch.dit.in_dims_key)
            continue
        add_flow(target, *_dim_of(settings, target, settings.in_dims[position], settings.alpha, arch.dit.in_dims_key))

    for plan, key in plans:
        limit = max_rank(plan.target.layer)
        if plan.dim > limit:
            raise NetworkArgError(key, plan.dim, f"a dim <= {limit} for {plan.target.lora_name} (rank {plan.dim} exceeds what a {tuple(plan.target.layer.weight.shape)} layer can hold)")
    if settings.verbose:
        for plan, _ in plans:
            logger.info("\t%-50s %d, %g", plan.target.lora_name, plan.dim, plan.alpha)
    return [plan for plan, _ in plans]
