"""sd-scripts entry point: `--network_module lr_weights.lora`.

String network_args -> settings -> targets -> network. Everything else lives in its own module;
this file only wires them in the order a host expects (CONTRACT §1, §4).
"""

from __future__ import annotations

import logging
from typing import Any, List, Optional, Tuple, Union

from lr_weights.network.assembly import log_created, plan_network, plan_network_from_weights
from lr_weights.archs.blocks import SD, SDXL
from lr_weights.adapters.lora import LoRAModule
from lr_weights.network.lora_network import LoRANetwork
from lr_weights.args.weights import resolve_block_lr_weights

logger = logging.getLogger(__name__)

__all__ = ["LoRAModule", "LoRANetwork", "create_network", "create_network_from_weights", "get_block_lr_weight"]


def create_network(
    multiplier: float,
    network_dim: Optional[int],
    network_alpha: Optional[float],
    vae,
    text_encoder,
    unet,
    neuron_dropout: Optional[float] = None,
    **kwargs: Any,
) -> LoRANetwork:
    """Build a LoRA/LoCon network for `text_encoder` (one, or a list of two for SDXL) and `unet`."""
    if kwargs.get("unit") is not None:
        logger.warning("unit=%s is a DyLoRA setting and lr_weights.lora ignores it; use --network_module lr_weights.dylora.", kwargs["unit"])
    plan = plan_network(network_dim, network_alpha, text_encoder, unet, neuron_dropout, kwargs)
    network = LoRANetwork(plan.arch, plan.plans, plan.options, multiplier=multiplier, settings=plan.settings)
    log_created(network, "network")
    return network


def create_network_from_weights(
    multiplier: float,
    file: Optional[str],
    vae,
    text_encoder,
    unet,
    weights_sd=None,
    for_inference: bool = False,
    **kwargs: Any,
) -> Tuple[LoRANetwork, dict]:
    """A network shaped like the modules in `file` (or `weights_sd`); the weights are not loaded.

    Block LR weights, LoRA+ ratios and dropouts in kwargs are honoured (upstream drops the last two).
    """
    plan, weights_sd = plan_network_from_weights(file, text_encoder, unet, weights_sd, for_inference, kwargs)
    network = LoRANetwork(plan.arch, plan.plans, plan.options, multiplier=multiplier)
    log_created(network, "network")
    return network, weights_sd


def get_block_lr_weight(*args: Any, **kwargs: Any) -> Union[None, List[float], Tuple[Optional[List[float]], Optional[float], Optional[List[float]]]]:
    """Upstream's public expansion of block LR weights, in both of its signatures.

    Newest: `get_block_lr_weight(is_sdxl, down, mid, up, zero_threshold)` -> flat list of 25
    (SDXL 23) or None. GUI era (sd-scripts v0.6.5): `get_block_lr_weight(down, mid, up,
    zero_threshold)` -> `(down12, mid, up12)` with lists that were not given left as None.
    """
    names_newest = ("is_sdxl", "down_lr_weight", "mid_lr_weight", "up_lr_weight", "zero_threshold")
    if len(args) == 5 or "is_sdxl" in kwargs:
        bound = dict(zip(names_newest, args), **kwargs)
        arch = SDXL if bound["is_sdxl"] else SD
        flat = resolve_block_lr_weights(arch, bound["down_lr_weight"], bound["mid_lr_weight"], bound["up_lr_weight"], bound["zero_threshold"])
        return None if flat is None else list(flat)

    bound = dict(zip(names_newest[1:], args), **kwargs)
    down, mid, up = bound["down_lr_weight"], bound["mid_lr_weight"], bound["up_lr_weight"]
    flat = resolve_block_lr_weights(SD, down, mid, up, bound["zero_threshold"])
    if flat is None:
        return None, None, None
    return (
        None if down is None else list(flat[SD.down_start : SD.mid_start]),
        None if mid is None else flat[SD.mid_start],
        None if up is None else list(flat[SD.up_start :]),
    )
