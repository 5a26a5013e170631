"""The model families lr_weights knows, one file each; see base.py for what an architecture holds.

Adding one (SD3, Lumina, ...) is a new file here defining an `Architecture`, an entry in
ARCHITECTURES, recorded module skeletons and an entry point of a few lines (docs/adding-a-family.md,
with FLUX as the worked example). Detection (archs/detect.py) and the CLI's choices read this registry.
"""

from __future__ import annotations

from typing import Dict, Tuple

from lr_weights.archs.anima import ANIMA
from lr_weights.archs.base import Architecture, LBWVocabulary, Stack
from lr_weights.archs.flux import FLUX
from lr_weights.archs.hunyuan_image import HUNYUAN_IMAGE
from lr_weights.archs.lumina import LUMINA
from lr_weights.archs.sd import SD
from lr_weights.archs.sd3 import SD3, SD3_LARGE
from lr_weights.archs.sdxl import SDXL

# SD3's layout depends on its joint-block count (SD3 / SD3.5 medium 24, SD3.5 large 38): two
# entries of one family; the entry point builds the layout of the model it is given.
ARCHITECTURES: Dict[str, Architecture] = {
    "sd": SD, "sdxl": SDXL, "flux": FLUX, "sd3": SD3, "sd3-large": SD3_LARGE, "lumina": LUMINA, "anima": ANIMA, "hunyuan_image": HUNYUAN_IMAGE,
}
# Other names users give an architecture: its models' names and common ones.
ALIASES: Tuple[Tuple[str, str], ...] = (
    ("sd1", "sd"), ("sd2", "sd"), ("flux1", "flux"), ("chroma", "flux"),
    ("sd35", "sd3"), ("sd3.5", "sd3"), ("sd35-large", "sd3-large"), ("sd3.5-large", "sd3-large"), ("lumina2", "lumina"),
    ("hunyuanimage", "hunyuan_image"),
)

__all__ = [
    "ALIASES", "ANIMA", "ARCHITECTURES", "Architecture", "FLUX", "HUNYUAN_IMAGE", "LBWVocabulary", "LUMINA", "SD", "SD3", "SD3_LARGE", "SDXL", "Stack",
    "architecture_names", "get_architecture", "keys_of_other_architectures",
]


def architecture_names() -> Tuple[str, ...]:
    """Every name get_architecture takes, each architecture followed by its aliases (for CLI choices)."""
    return tuple(name for key in ARCHITECTURES for name in (key,) + tuple(alias for alias, target in ALIASES if target == key))


def get_architecture(name: str) -> Architecture:
    """The architecture called `name` ("sd", "sdxl", "flux"; or an alias: "sd1"/"sd2" mean "sd")."""
    key = dict(ALIASES).get(name.lower(), name.lower())
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
