"""Which model a checkpoint, a diffusers folder, a LoRA file or a torch module is: the one place
that decides, from the signatures each family's archs/ file declares (archs/signatures.py).

Pure functions of names (and of one shape or config entry): no torch, no file reading here; the
callers (models/reference.py, files/, archs/blocks.py) read the names and hand them in.
Models are tried from the highest `rank` down; the first whose signature matches wins.
"""

from __future__ import annotations

from typing import Callable, Iterable, List, Mapping, Optional, Sequence, Tuple

from lr_weights.archs import ARCHITECTURES
from lr_weights.archs.base import Architecture
from lr_weights.archs.signatures import ModelSignature

Shapes = Callable[[str], Tuple[int, ...]]


def _ranked(kind: Optional[str] = None) -> List[Tuple[ModelSignature, Architecture]]:
    found = [(model, arch) for arch in ARCHITECTURES.values() if kind is None or arch.kind == kind for model in arch.models]
    return sorted(found, key=lambda pair: -pair[0].rank)


def model_names() -> Tuple[str, ...]:
    """Every model lr_weights has a skeleton for, in registry order (sd1, sd2, sdxl, flux, ...)."""
    return tuple(model.name for arch in ARCHITECTURES.values() for model in arch.models)


def model_signature(name: str) -> ModelSignature:
    for model, _ in _ranked():
        if model.name == name:
            return model
    raise ValueError(f"model {name!r} is not known: expected one of {', '.join(model_names())}")


def architecture_of_model(name: str) -> Architecture:
    """The block layout of a model (sd1 and sd2 -> SD)."""
    for model, arch in _ranked():
        if model.name == name:
            return arch
    raise ValueError(f"model {name!r} is not known: expected one of {', '.join(model_names())}")


def models_of_architecture(arch: Architecture, first: Optional[str] = None) -> List[str]:
    """The models sharing `arch`'s layout, `first` first (the rest in registry order)."""
    names = [model.name for model in arch.models]
    return ([first] if first in names else []) + [name for name in names if name != first]


def model_from_checkpoint_keys(keys: Sequence[str], source: str) -> str:
    """The model a single-file checkpoint holds, from its key names."""
    for model, _ in _ranked():
        if not model.checkpoint.is_empty and model.checkpoint.matches(keys):
            return model.name
    raise ValueError(f"{source} is not a checkpoint this tool knows (its keys match none of {', '.join(model_names())})")


def model_from_diffusers_folder(has_folder: Callable[[str], bool], unet_config: Mapping[str, object]) -> str:
    """The model a diffusers folder holds, from its subfolders and unet/config.json."""
    for model, _ in _ranked():
        if model.diffusers_folders is None:
            continue
        if all(has_folder(f) for f in model.diffusers_folders) and all(unet_config.get(k) == v for k, v in model.diffusers_unet_config):
            return model.name
    raise ValueError("a diffusers folder of no model this tool knows")


def model_from_lora_names(names: Iterable[str], shapes: Optional[Shapes] = None) -> str:
    """The model a LoRA file was trained on, from its module names (and, for SD1 vs SD2 without
    text-encoder modules, one attention shape)."""
    names = list(names)
    for model, _ in _ranked():
        if model.lora.matches(names, shapes):
            return model.name
    raise ValueError("no model's LoRA names match (a family without a fallback signature?)")


def architecture_from_module(class_names: Sequence[str], has_attribute: Callable[[str], bool], kind: str = "unet") -> Architecture:
    """The architecture of a denoiser module of `kind`, from its MRO class names and attributes;
    the lowest-ranked model of that kind is the fallback (SD for the U-Net kind)."""
    ranked = _ranked(kind)
    for model, arch in ranked:
        if set(model.module_classes) & set(class_names):
            return arch
        if model.module_attributes and all(has_attribute(a) for a in model.module_attributes):
            return arch
    return ranked[-1][1]
