"""From what a host passes to what a network is built from: the steps both entry points share.

`lr_weights.lora` and `lr_weights.dylora` differ only in the network class and in DyLoRA's `unit`
checks; reading the arguments, finding the targets and planning the modules happen here once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from lr_weights.archs.blocks import Architecture, detect_architecture
from lr_weights.files.io import load_lora_file
from lr_weights.log import ensure_visible
from lr_weights.network.lora_network import LoRANetwork
from lr_weights.network.plans import ModulePlan, plan_from_settings, plan_from_weights
from lr_weights.args.settings import NetworkSettings, TrainingOptions, normalise_kwargs, parse_network_settings, parse_training_options
from lr_weights.network.table import format_block_table
from lr_weights.args.dit_settings import normalise_dit_kwargs
from lr_weights.network.targets import as_text_encoder_list, file_targets, text_encoder_targets, unet_targets

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkPlan:
    """Everything a network class needs: architecture, options, modules (and the parsed args)."""

    arch: Architecture
    options: TrainingOptions
    plans: List[ModulePlan]
    args: Dict[str, Any]
    settings: Optional[NetworkSettings] = None


def plan_network(network_dim, network_alpha, text_encoder, unet, neuron_dropout, kwargs: Mapping[str, Any]) -> NetworkPlan:
    """`create_network`'s arguments -> the modules to build (settings validated, ranks checked)."""
    ensure_visible()
    arch = detect_architecture(unet)
    settings = parse_network_settings(arch, network_dim, network_alpha, kwargs, neuron_dropout)
    encoders = as_text_encoder_list(text_encoder)
    plans = plan_from_settings(settings, text_encoder_targets(encoders, arch), unet_targets(unet, arch, settings.trains_conv))
    return NetworkPlan(arch, settings.options, plans, dict(kwargs), settings)


def plan_network_from_weights(file, text_encoder, unet, weights_sd, for_inference: bool, kwargs: Mapping[str, Any], arch: Optional[Architecture] = None):
    """`create_network_from_weights`' arguments -> (the modules the file holds, its state dict), for
    either kind (`arch` None: the U-Net kind's, read off `unet`).

    Block LR weights, LoRA+ ratios and dropouts in kwargs are honoured for training (upstream drops
    the last two); for inference only the block weights are kept.
    """
    ensure_visible()
    arch = arch or detect_architecture(unet)
    if weights_sd is None:
        weights_sd = load_lora_file(file)
    args = normalise_kwargs(kwargs) if arch.dit is None else normalise_dit_kwargs(arch, kwargs)
    options = options_from_weights(arch, args, for_inference)
    te_targets, unet_targets = file_targets(arch, as_text_encoder_list(text_encoder), unet, list(weights_sd))
    plans, unmatched = plan_from_weights(arch, weights_sd, te_targets, unet_targets)
    if unmatched:
        logger.warning(
            "%s: %d modules match no layer of this model (another architecture?) and are ignored, e.g. %s",
            file or "weights", len(unmatched), ", ".join(unmatched[:3]),
        )
    return NetworkPlan(arch, options, plans, args), weights_sd


def options_from_weights(arch: Architecture, args: Mapping[str, Any], for_inference: bool) -> TrainingOptions:
    """The training options of a network made from a file; for inference only the block weights."""
    options = parse_training_options(arch, args)
    return TrainingOptions(block_lr_weights=options.block_lr_weights) if for_inference else options


def log_created(network: LoRANetwork, kind: str) -> None:
    """The one per-block table, logged once when a network is made."""
    logger.info(
        "lr_weights: %s %s, %d text encoder + %d U-Net modules\n%s",
        network.arch.name.upper(),
        kind,
        len(network.text_encoder_loras),
        len(network.unet_loras),
        format_block_table(network.block_table()),
    )
