"""The model families lr_weights knows, one file each; see base.py for what an architecture holds.

Adding one (SD3, Lumina, ...) is a new file here defining an `Architecture`, an entry in
ARCHITECTURES, and a recorded module skeleton for `lr-weights plan` (docs/flux.md says what adding
FLUX took).
"""

from __future__ import annotations

from typing import Dict

from lr_weights.archs.base import Architecture, LBWVocabulary, Stack
from lr_weights.archs.flux import FLUX
from lr_weights.archs.lumina import LUMINA
from lr_weights.archs.sd import SD
from lr_weights.archs.sd3 import SD3, SD3_LARGE
from lr_weights.archs.sdxl import SDXL

# SD3 and Lumina are listed at their usual block counts (SD3.5 medium, Lumina 2 2B); their entry
# points build the layout of the model they are given (archs/sd3.py, archs/lumina.py).
ARCHITECTURES: Dict[str, Architecture] = {"sd": SD, "sdxl": SDXL, "flux": FLUX, "sd3": SD3, "lumina": LUMINA}

__all__ = ["ARCHITECTURES", "Architecture", "FLUX", "LBWVocabulary", "LUMINA", "SD", "SD3", "SDXL", "Stack", "get_architecture", "keys_of_other_architectures"]


def get_architecture(name: str) -> Architecture:
    """The architecture called `name` ("sd", "sdxl", "flux", "sd3", "lumina"; "sd1"/"sd2" mean "sd")."""
    aliases = {"sd1": "sd", "sd2": "sd", "flux1": "flux", "chroma": "flux", "sd35": "sd3", "sd3.5": "sd3", "lumina2": "lumina"}
    key = aliases.get(name.lower(), name.lower())
    if key in ("sd3-large", "sd35-large", "sd3.5-large"):  # the same family with 38 joint blocks
        return SD3_LARGE
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
