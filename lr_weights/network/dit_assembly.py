"""From what a host passes to a DiT-kind network: the steps every lora_flux-style entry point shares.

`lr_weights.flux` (and each family after its pattern) is these two functions with its
architecture: string network_args -> settings (args/dit_settings.py) -> targets and plans
(dit_plan.py) -> network (dit_network.py).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional, Tuple

from lr_weights.archs.base import Architecture
from lr_weights.args.dit_settings import parse_dit_settings, parse_regex_pairs, reg_lr
from lr_weights.args.scalars import parse_ratio
from lr_weights.log import ensure_visible
from lr_weights.network.assembly import log_created, plan_network_from_weights
from lr_weights.network.dit_network import DiTLoRANetwork, network_class
from lr_weights.network.dit_plan import find_dit_targets, plan_dit
from lr_weights.network.targets import as_text_encoder_list

logger = logging.getLogger(__name__)


def create_dit_network(
    arch: Architecture, multiplier: float, network_dim, network_alpha, text_encoders, model, neuron_dropout, kwargs: Mapping[str, Any]
) -> DiTLoRANetwork:
    """A LoRA network for `model` and `text_encoders` (FLUX: [CLIP-L or None, T5-XXL])."""
    ensure_visible()
    settings = parse_dit_settings(arch, network_dim, network_alpha, kwargs, neuron_dropout)
    te_targets, block_targets, in_targets = find_dit_targets(arch, as_text_encoder_list(text_encoders), model, settings)
    plans = plan_dit(settings, te_targets, block_targets, in_targets)
    network = network_class(arch)(arch, plans, settings.options, multiplier=multiplier, settings=settings, reg_lrs=settings.reg_lrs, ggpo=(settings.ggpo_beta, settings.ggpo_sigma))
    ratios = [parse_ratio(key, kwargs.get(key)) for key in ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio")]
    if any(r is not None for r in ratios):
        network.set_loraplus_lr_ratio(*ratios)
    if settings.ggpo:
        logger.info("LoRA-GGPO training sigma: %s beta: %s", settings.ggpo_sigma, settings.ggpo_beta)
    flags = "".join(f", {key}" for key, on in settings.flags if on)
    log_created(network, f"network (train_blocks={settings.train_blocks}{', split_qkv' if settings.split_qkv else ''}{flags})")
    return network


def create_dit_network_from_weights(
    arch: Architecture, multiplier: float, file: Optional[str], text_encoders, model, weights_sd, for_inference: bool, kwargs: Mapping[str, Any]
) -> Tuple[DiTLoRANetwork, dict]:
    """A network shaped like the modules in `file` (or `weights_sd`); the weights are not loaded.

    As upstream: an encoder's modules when the file has its keys (FLUX: T5-XXL), the in
    layers when it has them, split_qkv off (files hold merged qkv). Block LR weights, LoRA+ ratios
    and dropouts in kwargs are honoured for training (upstream drops them); for inference only the
    block weights are kept.
    """
    plan, weights_sd = plan_network_from_weights(file, text_encoders, model, weights_sd, for_inference, kwargs, arch)
    reg_lrs = ()
    if plan.args.get("network_reg_lrs") is not None and not for_inference:
        reg_lrs = parse_regex_pairs("network_reg_lrs", plan.args["network_reg_lrs"], reg_lr)
    network = network_class(arch)(arch, plan.plans, plan.options, multiplier=multiplier, reg_lrs=reg_lrs)
    log_created(network, "network from weights")
    return network, weights_sd
