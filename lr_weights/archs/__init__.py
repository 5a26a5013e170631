"""The model families lr_weights knows, one file each; see base.py for what an architecture holds.

Adding one (SD3, Lumina, ...) is a new file here defining an `Architecture`, an entry in
ARCHITECTURES, and a recorded module skeleton for `lr-weights plan` (docs/flux.md says what adding
FLUX took).
"""

from __future__ import annotations

from typing import Dict

from lr_weights.archs.anima import ANIMA
from lr_weights.archs.base import Architecture, LBWVocabulary, Stack
from lr_weights.archs.flux import FLUX
from lr_weights.archs.hunyuan_image import HUNYUAN_IMAGE
from lr_weights.archs.sd import SD
from lr_weights.archs.sdxl import SDXL

ARCHITECTURES: Dict[str, Architecture] = {"sd": SD, "sdxl": SDXL, "flux": FLUX, "anima": ANIMA, "hunyuan_image": HUNYUAN_IMAGE}

__all__ = ["ANIMA", "ARCHITECTURES", "Architecture", "FLUX", "HUNYUAN_IMAGE", "LBWVocabulary", "SD", "SDXL", "Stack", "get_architecture", "keys_of_other_architectures"]


def get_architecture(name: str) -> Architecture:
    """The architecture called `name` ("sd", "sdxl", "flux"; "sd1"/"sd2" mean "sd")."""
    aliases = {"sd1": "sd", "sd2": "sd", "flux1": "flux", "chroma": "flux", "hunyuan-image": "hunyuan_image", "hunyuanimage": "hunyuan_image"}
    key = aliases.get(name.lower(), name.lower())
    if key not in ARCHITECTURES:
        from lr_weights.errors import NetworkArgError

        raise NetworkArgError("arch", name, ", ".join(ARCHITECTURES))
    return ARCHITECTURES[key]


def keys_of_other_architectures(arch: Architecture) -> Dict[str, Architecture]:
    """network_args that belong to another family's entry point and not to `arch`'s: key -> owner."""
    own = set(arch.own_keys)
    others: Dict[str, Architecture] = {}
    for other in ARCHITECTURES.values():
        if other.entry_point == arch.entry_point:
            continue
        for key in other.own_keys:
            if key not in own:
                others.setdefault(key, other)
    return others
