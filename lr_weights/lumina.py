"""sd-scripts entry point for Lumina 2: `lumina_train_network.py --network_module lr_weights.lumina`.

A drop-in for sd-scripts' `networks.lora_lumina` (same modules, names, creation order, init, file)
that adds block-wise learning rates: `layer_lr_weight` (one value per main layer of the loaded
model: 26 for Lumina 2 2B, or a preset expanded over them), `refiner_lr_weight` (4: context_refiner
0-1, noise_refiner 0-1), `block_lr_zero_threshold` and `layer_block_dims` / `layer_block_alphas`.
Unlike upstream, `train_block_indices` selects main layers and `split_qkv` works (docs/lumina.md).
Lumina is one family of the DiT kind: archs/lumina.py, network/dit_assembly.py.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from lr_weights.archs.lumina import architecture_of
from lr_weights.network.dit_assembly import create_dit_network, create_dit_network_from_weights
from lr_weights.network.dit_network import DiTLoRANetwork

__all__ = ["create_network", "create_network_from_weights"]


def create_network(multiplier: float, network_dim: Optional[int], network_alpha: Optional[float], ae, text_encoders, lumina, neuron_dropout: Optional[float] = None, **kwargs: Any) -> DiTLoRANetwork:
    """Build a LoRA network for `lumina` (a NextDiT) and `text_encoders` ([Gemma2])."""
    return create_dit_network(architecture_of(lumina), multiplier, network_dim, network_alpha, text_encoders, lumina, neuron_dropout, kwargs)


def create_network_from_weights(multiplier: float, file: Optional[str], ae, text_encoders, lumina, weights_sd=None, for_inference: bool = False, **kwargs: Any) -> Tuple[DiTLoRANetwork, dict]:
    """A network shaped like the modules in `file` (or `weights_sd`); the weights are not loaded."""
    return create_dit_network_from_weights(architecture_of(lumina), multiplier, file, text_encoders, lumina, weights_sd, for_inference, kwargs)
