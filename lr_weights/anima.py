"""sd-scripts entry point for Anima: `anima_train_network.py --network_module lr_weights.anima`.

A drop-in for sd-scripts' `networks.lora_anima` (same modules, names, creation order, init, file)
that adds block-wise learning rates: `block_lr_weight` (28 values, B00..B27),
`llm_adapter_lr_weight` (6, A00..A05, with `train_llm_adapter`), `block_lr_zero_threshold`,
`block_dims` / `block_alphas` (28) and `lbw_weights`. Anima is one family of the DiT kind: what it
is lives in archs/anima.py, the steps in network/dit_assembly.py.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from lr_weights.archs import ANIMA
from lr_weights.network.dit_assembly import create_dit_network, create_dit_network_from_weights
from lr_weights.network.dit_network import DiTLoRANetwork

__all__ = ["create_network", "create_network_from_weights"]


def create_network(multiplier: float, network_dim: Optional[int], network_alpha: Optional[float], vae, text_encoders, unet, neuron_dropout: Optional[float] = None, **kwargs: Any) -> DiTLoRANetwork:
    """Build a LoRA network for the Anima DiT `unet` and `text_encoders` ([Qwen3])."""
    return create_dit_network(ANIMA, multiplier, network_dim, network_alpha, text_encoders, unet, neuron_dropout, kwargs)


def create_network_from_weights(multiplier: float, file: Optional[str], vae, text_encoders, unet, weights_sd=None, for_inference: bool = False, **kwargs: Any) -> Tuple[DiTLoRANetwork, dict]:
    """A network shaped like the modules in `file` (or `weights_sd`); the weights are not loaded."""
    return create_dit_network_from_weights(ANIMA, multiplier, file, text_encoders, unet, weights_sd, for_inference, kwargs)
