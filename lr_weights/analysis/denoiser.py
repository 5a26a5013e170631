"""What the measure needs of a model: its layers under sd-scripts' LoRA names, its latent shape and
timestep range, how to turn prompts into conditioning, and one prediction f(x_t, t, c).

`Denoiser` is filled in by `tiny_denoisers` (the package's tiny models) and `base_model` (models
loaded from disk); the measure reads nothing else about a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from lr_weights.archs.base import Architecture

Conditioning = Dict[str, torch.Tensor]  # tensors whose first dimension runs over prompts


@dataclass(frozen=True)
class Denoiser:
    model: str  # sd1 | sd2 | sdxl | flux
    arch: Architecture
    net: nn.Module  # the U-Net / flow model
    text_encoders: Tuple[Optional[nn.Module], ...]
    layers: Mapping[str, nn.Module]  # sd-scripts LoRA module name -> its Linear / Conv2d
    latent_shape: Callable[[int], Tuple[int, ...]]  # resolution in pixels -> one sample's latent shape
    default_resolution: int
    resolution_step: int  # resolutions must be multiples of this (the latent must survive every downsampling)
    flow: bool  # True: timesteps in (0, 1) (FLUX); False: discrete 0..999 (SD's DDPM schedule)
    encode: Callable[[Sequence[str]], Conditioning]
    predict: Callable[[torch.Tensor, torch.Tensor, Conditioning], torch.Tensor]
    # Whether `encode` takes any text; False where no tokenizer is at hand (only "" is encoded).
    tokenizes: bool = True

    @property
    def parameter(self) -> torch.Tensor:
        return next(self.net.parameters())


def named_layers(root: Optional[nn.Module], prefix: str, rename: Optional[Callable[[str], Optional[str]]] = None) -> Dict[str, nn.Module]:
    """Every Linear / Conv2d under `root` by its sd-scripts LoRA name (`prefix` + path, dots as
    underscores); `rename` maps a module path to sd-scripts' path for that model (None: skip it)."""
    layers: Dict[str, nn.Module] = {}
    if root is None:
        return layers
    for path, module in root.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        path = rename(path) if rename else path
        if path is not None:
            layers[f"{prefix}_{path}".replace(".", "_")] = module
    return layers


def clip_layers(encoder: nn.Module, prefix: str) -> Dict[str, nn.Module]:
    """A transformers CLIP text model's layers under sd-scripts' names (text_model.encoder...):
    transformers 5's CLIPTextModel lost the text_model level, which the names keep."""
    return named_layers(encoder, prefix, None if hasattr(encoder, "text_model") else (lambda p: "text_model." + p))
