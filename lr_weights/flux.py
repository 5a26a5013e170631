"""sd-scripts entry point for FLUX.1 and Chroma: `flux_train_network.py --network_module lr_weights.flux`.

A drop-in for sd-scripts' `networks.lora_flux` (same modules, names, creation order, init, file)
that adds block-wise learning rates: `double_lr_weight` (19 values), `single_lr_weight` (38),
`block_lr_zero_threshold`, `double_block_dims` / `single_block_dims` (+ `_alphas`) and
`lbw_weights` in LBW's FLUX vocabulary. String network_args -> settings (flux_settings.py) ->
targets and plans (flux_plan.py) -> network (flux_network.py).
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Tuple

from lr_weights.archs import FLUX
from lr_weights.network.assembly import log_created
from lr_weights.adapters.split import FluxLoRAModule
from lr_weights.network.flux_network import FluxLoRANetwork
from lr_weights.network.flux_plan import find_flux_targets, plan_flux
from lr_weights.args.flux_settings import normalise_flux_kwargs, parse_flux_settings, parse_regex_pairs, reg_lr
from lr_weights.files.io import load_lora_file
from lr_weights.log import ensure_visible
from lr_weights.network.lora_network import plan_from_weights
from lr_weights.args.scalars import parse_ratio
from lr_weights.args.settings import TrainingOptions, parse_training_options
from lr_weights.network.targets import flux_block_targets, flux_filtered_targets, flux_text_encoder_targets

logger = logging.getLogger(__name__)

__all__ = ["FluxLoRAModule", "FluxLoRANetwork", "create_network", "create_network_from_weights"]


def create_network(
    multiplier: float,
    network_dim: Optional[int],
    network_alpha: Optional[float],
    ae,
    text_encoders,
    flux,
    neuron_dropout: Optional[float] = None,
    **kwargs: Any,
) -> FluxLoRANetwork:
    """Build a LoRA network for `flux` and `text_encoders` ([CLIP-L or None, T5-XXL])."""
    ensure_visible()
    settings = parse_flux_settings(network_dim, network_alpha, kwargs, neuron_dropout)
    te_targets, block_targets, in_targets = find_flux_targets(_encoders(text_encoders), flux, settings)
    plans = plan_flux(settings, te_targets, block_targets, in_targets)
    network = FluxLoRANetwork(plans, settings.options, multiplier=multiplier, settings=settings, reg_lrs=settings.reg_lrs, ggpo=(settings.ggpo_beta, settings.ggpo_sigma))
    ratios = [parse_ratio(key, kwargs.get(key)) for key in ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio")]
    if any(r is not None for r in ratios):
        network.set_loraplus_lr_ratio(*ratios)
    if settings.ggpo:
        logger.info("LoRA-GGPO training sigma: %s beta: %s", settings.ggpo_sigma, settings.ggpo_beta)
    log_created(network, f"network (train_blocks={settings.train_blocks}{', split_qkv' if settings.split_qkv else ''}{', T5-XXL' if settings.train_t5xxl else ''})")
    return network


def create_network_from_weights(
    multiplier: float,
    file: Optional[str],
    ae,
    text_encoders,
    flux,
    weights_sd=None,
    for_inference: bool = False,
    **kwargs: Any,
) -> Tuple[FluxLoRANetwork, dict]:
    """A network shaped like the modules in `file` (or `weights_sd`); the weights are not loaded.

    As upstream: T5 modules when the file has `lora_te3_` keys, the in layers when it has them,
    split_qkv off (files hold merged qkv). Block LR weights, LoRA+ ratios and dropouts in kwargs are
    honoured for training (upstream drops them); for inference only the block weights are kept.
    """
    ensure_visible()
    if weights_sd is None:
        weights_sd = load_lora_file(file)
    args = normalise_flux_kwargs(kwargs)
    options = parse_training_options(FLUX, args)
    if for_inference:
        options = TrainingOptions(block_lr_weights=options.block_lr_weights)
    has_t5 = any(str(key).startswith("lora_te3") for key in weights_sd)
    encoders = _encoders(text_encoders)
    te_targets = flux_text_encoder_targets(encoders, train_t5xxl=has_t5)
    flow_targets = flux_block_targets(flux, FLUX, ("DoubleStreamBlock", "SingleStreamBlock"))
    for name_filter in ("_img_in", "_time_in", "_vector_in", "_guidance_in", "_txt_in"):
        flow_targets += flux_filtered_targets(flux, FLUX, name_filter)
    plans, unmatched = plan_from_weights(weights_sd, te_targets, flow_targets)
    if unmatched:
        logger.warning("%s: %d modules match no layer of this model and are ignored, e.g. %s", file or "weights", len(unmatched), ", ".join(unmatched[:3]))
    reg_lrs = ()
    if args.get("network_reg_lrs") is not None and not for_inference:
        reg_lrs = parse_regex_pairs("network_reg_lrs", args["network_reg_lrs"], reg_lr)
    network = FluxLoRANetwork(plans, options, multiplier=multiplier, reg_lrs=reg_lrs)
    log_created(network, "network from weights")
    return network, weights_sd


def _encoders(text_encoders):
    if text_encoders is None:
        return []
    if isinstance(text_encoders, (list, tuple)):
        return list(text_encoders)
    return [text_encoders]
