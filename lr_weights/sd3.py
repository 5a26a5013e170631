"""sd-scripts entry point for SD3 / SD3.5: `sd3_train_network.py --network_module lr_weights.sd3`.

A drop-in for sd-scripts' `networks.lora_sd3` (same modules, names, creation order, init, file)
that adds block-wise learning rates: `joint_lr_weight` (one value per joint block of the loaded
model: 24 for SD3 / SD3.5 medium, 38 for SD3.5 large, or a preset expanded over them),
`block_lr_zero_threshold` and `joint_block_dims` / `joint_block_alphas`. SD3 is one family of the
DiT kind: what it is lives in archs/sd3.py, the steps in network/dit_assembly.py (docs/sd3.md).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from lr_weights.archs.sd3 import architecture_of
from lr_weights.network.dit_assembly import create_dit_network, create_dit_network_from_weights
from lr_weights.network.dit_network import DiTLoRANetwork

__all__ = ["create_network", "create_network_from_weights"]


def create_network(multiplier: float, network_dim: Optional[int], network_alpha: Optional[float], vae, text_encoders, mmdit, neuron_dropout: Optional[float] = None, **kwargs: Any) -> DiTLoRANetwork:
    """Build a LoRA network for `mmdit` and `text_encoders` ([CLIP-L, CLIP-G, T5-XXL])."""
    return create_dit_network(architecture_of(mmdit), multiplier, network_dim, network_alpha, text_encoders, mmdit, neuron_dropout, kwargs)


def create_network_from_weights(multiplier: float, file: Optional[str], vae, text_encoders, mmdit, weights_sd=None, for_inference: bool = False, **kwargs: Any) -> Tuple[DiTLoRANetwork, dict]:
    """A network shaped like the modules in `file` (or `weights_sd`); the weights are not loaded."""
    return create_dit_network_from_weights(architecture_of(mmdit), multiplier, file, text_encoders, mmdit, weights_sd, for_inference, kwargs)
