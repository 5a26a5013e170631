"""sd-scripts entry point for HunyuanImage 2.1: `hunyuan_image_train_network.py --network_module lr_weights.hunyuan_image`.

A drop-in for sd-scripts' `networks.lora_hunyuan_image` (same modules, names, creation order,
init, file) that adds block-wise learning rates: `double_lr_weight` (20 values, D00..D19),
`single_lr_weight` (40, S00..S39), `block_lr_zero_threshold`, `double_block_dims` /
`single_block_dims` (+ `_alphas`) and `lbw_weights`: FLUX's words with this family's counts.
HunyuanImage is one family of the DiT kind: what it is lives in archs/hunyuan_image.py.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from lr_weights.archs import HUNYUAN_IMAGE
from lr_weights.network.dit_assembly import create_dit_network, create_dit_network_from_weights
from lr_weights.network.dit_network import DiTLoRANetwork

__all__ = ["create_network", "create_network_from_weights"]


def create_network(multiplier: float, network_dim: Optional[int], network_alpha: Optional[float], vae, text_encoders, dit, neuron_dropout: Optional[float] = None, **kwargs: Any) -> DiTLoRANetwork:
    """Build a LoRA network for the HunyuanImage-2.1 DiT (its text encoders are never adapted)."""
    return create_dit_network(HUNYUAN_IMAGE, multiplier, network_dim, network_alpha, text_encoders, dit, neuron_dropout, kwargs)


def create_network_from_weights(multiplier: float, file: Optional[str], vae, text_encoders, dit, weights_sd=None, for_inference: bool = False, **kwargs: Any) -> Tuple[DiTLoRANetwork, dict]:
    """A network shaped like the modules in `file` (or `weights_sd`); the weights are not loaded."""
    return create_dit_network_from_weights(HUNYUAN_IMAGE, multiplier, file, text_encoders, dit, weights_sd, for_inference, kwargs)
