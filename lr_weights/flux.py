"""sd-scripts entry point for FLUX.1 and Chroma: `flux_train_network.py --network_module lr_weights.flux`.

A drop-in for sd-scripts' `networks.lora_flux` (same modules, names, creation order, init, file)
that adds block-wise learning rates: `double_lr_weight` (19 values), `single_lr_weight` (38),
`block_lr_zero_threshold`, `double_block_dims` / `single_block_dims` (+ `_alphas`) and
`lbw_weights` in LBW's FLUX vocabulary. FLUX is one family of the DiT kind: what it is lives in
archs/flux.py, the steps in network/dit_assembly.py (docs/adding-a-family.md).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple

from lr_weights.adapters.split import SplitLoRAModule, split_dims
from lr_weights.archs import FLUX
from lr_weights.args.dit_settings import DiTSettings, parse_dit_settings
from lr_weights.network.dit_assembly import create_dit_network, create_dit_network_from_weights
from lr_weights.network.dit_network import DiTLoRANetwork, NormHookedDiTNetwork

__all__ = ["FluxLoRAModule", "FluxLoRANetwork", "create_network", "create_network_from_weights"]

# The DiT kind's classes under the names lora_flux users know.
FluxLoRAModule = SplitLoRAModule
FluxLoRANetwork = NormHookedDiTNetwork


def create_network(multiplier: float, network_dim: Optional[int], network_alpha: Optional[float], ae, text_encoders, flux, neuron_dropout: Optional[float] = None, **kwargs: Any) -> DiTLoRANetwork:
    """Build a LoRA network for `flux` and `text_encoders` ([CLIP-L or None, T5-XXL])."""
    return create_dit_network(FLUX, multiplier, network_dim, network_alpha, text_encoders, flux, neuron_dropout, kwargs)


def create_network_from_weights(multiplier: float, file: Optional[str], ae, text_encoders, flux, weights_sd=None, for_inference: bool = False, **kwargs: Any) -> Tuple[DiTLoRANetwork, dict]:
    """A network shaped like the modules in `file` (or `weights_sd`); the weights are not loaded."""
    return create_dit_network_from_weights(FLUX, multiplier, file, text_encoders, flux, weights_sd, for_inference, kwargs)


def parse_flux_settings(network_dim: Any, network_alpha: Any, kwargs: Mapping[str, Any], neuron_dropout: Any = None) -> DiTSettings:
    """FLUX's network_args, validated (what create_network reads)."""
    return parse_dit_settings(FLUX, network_dim, network_alpha, kwargs, neuron_dropout)


def qkv_split_dims(lora_name: str, layer) -> Optional[Tuple[int, ...]]:
    """The parts split_qkv cuts a FLUX layer into (None for a layer it leaves whole)."""
    return split_dims(FLUX.dit.split_rule(lora_name), lora_name, layer)
