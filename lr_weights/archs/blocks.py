"""Block numbering: which block a LoRA module belongs to, and what each block is called.

The architectures themselves are data in lr_weights/archs/ (SD 25 blocks, SDXL 23, FLUX 59); this
module keeps the names the rest of the package and its users import. Everything here is a pure
function of names, so it works on models whose weights live on the `meta` device and never
imports sd-scripts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from lr_weights.archs import ARCHITECTURES, FLUX, SD, SDXL, get_architecture
from lr_weights.archs.base import Architecture, LBWVocabulary, Stack
from lr_weights.archs.detect import architecture_from_module

if TYPE_CHECKING:  # the CLI's --help imports this module and must not pay for torch
    import torch

LORA_PREFIX_UNET = "lora_unet"
LORA_PREFIX_TEXT_ENCODER = "lora_te"
LORA_PREFIX_TEXT_ENCODER1 = "lora_te1"
LORA_PREFIX_TEXT_ENCODER2 = "lora_te2"

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "FLUX",
    "LBWVocabulary",
    "SD",
    "SDXL",
    "Stack",
    "block_index",
    "detect_architecture",
    "get_architecture",
]


def block_index(lora_name: str, arch: Architecture) -> int:
    """The flat block index of a U-Net / flow-model LoRA module name, or -1 when the name has none."""
    return arch.locate(lora_name)


def detect_architecture(unet: "Optional[torch.nn.Module]") -> Architecture:
    """The U-Net kind's architecture of `unet` (SDXL for sd-scripts' SDXL U-Net, SD otherwise),
    from the module signatures in archs/ (archs/detect.py)."""
    if unet is None:
        return SD
    return architecture_from_module([cls.__name__ for cls in type(unet).__mro__], lambda name: hasattr(unet, name))
