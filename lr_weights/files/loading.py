"""What a LoRA file says about its modules, checked against the model before anything is built.

Files in the wild come with or without alphas, in fp32/fp16/bf16, with sd-scripts' LDM names or
with diffusers' U-Net names (SDXL LoRAs trained by diffusers scripts), and sometimes for another
model. Everything here turns such a file into dims and alphas, or into a ValueError that names the
tensors and shapes that do not fit, so that no shape error surfaces from deep inside torch later.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Dict, List, Mapping, MutableMapping, Sequence, Tuple

import torch
from torch import nn

if TYPE_CHECKING:
    import logging

    from lr_weights.archs.base import Architecture


def rename_foreign_keys(weights: MutableMapping[str, torch.Tensor], arch: "Architecture") -> List[str]:
    """Rename the tensors of modules another trainer named (SDXL: diffusers' U-Net names) to
    sd-scripts' names, in place (as upstream), by the arch's own mapping (`rename_foreign`).

    Returns the module names that look foreign-named but have no counterpart (left as they are;
    the caller reports them as unmatched).
    """
    renames: Dict[str, str] = {}
    unknown = set()
    if arch.rename_foreign is None:
        return []
    for key in list(weights):
        module, dot, suffix = key.partition(".")
        if not dot or re.match(arch.foreign_name_pattern, module) is None:
            continue
        new = arch.rename_foreign(module)
        if new is None:
            unknown.add(module)
            continue
        renames[key] = new + dot + suffix
    clashes = [new for old, new in renames.items() if new in weights and new not in renames]
    if clashes:
        raise ValueError(
            f"the file holds {clashes[0]} twice, once under its diffusers name and once under its sd-scripts name; "
            "it mixes two LoRAs and cannot be loaded as one"
        )
    moved = {new: weights.pop(old) for old, new in renames.items()}
    weights.update(moved)
    return sorted(unknown)


def _shape(value) -> Tuple[int, ...]:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else ()


def dims_and_alphas(weights: Mapping[str, object]) -> Tuple[Dict[str, int], Dict[str, float]]:
    """Per module: dim = rows of `lora_down.weight`, alpha from the file. Bad entries are ValueErrors."""
    dims: Dict[str, int] = {}
    alphas: Dict[str, float] = {}
    for key, value in weights.items():
        name, dot, suffix = str(key).partition(".")
        if not dot:
            continue
        if suffix == "alpha":
            alphas[name] = file_alpha(key, value)
        elif suffix.startswith("lora_down."):
            if not isinstance(value, torch.Tensor) or value.dim() not in (2, 4) or value.shape[0] == 0:
                raise ValueError(f"{key} has shape {_shape(value)}: a LoRA down weight is (dim, in) or (dim, in, kh, kw) with dim >= 1")
            dims[name] = int(value.shape[0])
    return dims, alphas


def file_alpha(key: str, value: object) -> float:
    """A module's alpha as a float: one finite number (a 0-d or one-element tensor, or a number)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{key} has shape {tuple(value.shape)}: an alpha is a single number")
        alpha = float(value.detach().float().item())
    else:
        try:
            alpha = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key} is {value!r}: an alpha is a single number") from None
    if not math.isfinite(alpha):
        raise ValueError(f"{key} is {alpha}: an alpha must be finite (was the run that saved this file diverging?)")
    return alpha


def expected_shapes(layer: nn.Module, dim: int) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """(lora_down shape, lora_up shape) of a rank-`dim` adapter of `layer`."""
    if type(layer).__name__ == "Conv2d" or isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        return (dim, layer.in_channels, kh, kw), (layer.out_channels, dim, 1, 1)
    return (dim, layer.in_features), (layer.out_features, dim)


def shape_mismatches(plans: Sequence, weights: Mapping[str, torch.Tensor]) -> List[str]:
    """'key: file (...) vs model (...)' for every tensor of a planned module that does not fit."""
    problems = []
    for plan in plans:
        down_shape, up_shape = expected_shapes(plan.target.layer, plan.dim)
        prefix = plan.target.lora_name + "."
        for suffix, expected in (("lora_down.weight", down_shape), ("lora_up.weight", up_shape)):
            value = weights.get(prefix + suffix)
            if value is None:
                continue
            if tuple(value.shape) != expected:
                problems.append(f"{prefix}{suffix}: file {tuple(value.shape)} vs model {expected}")
            elif value.is_floating_point() and not bool(torch.isfinite(value).all()):
                problems.append(f"{prefix}{suffix}: holds nan or inf")
    return problems


def describe(problems: Sequence[str], limit: int = 5) -> str:
    shown = "; ".join(problems[:limit])
    return shown + (f"; and {len(problems) - limit} more" if len(problems) > limit else "")


def check_file_fits(
    file: str,
    weights: Mapping[str, torch.Tensor],
    own: Mapping[str, torch.Tensor],
    *,
    stranger: str,
    remedy: str,
    shared_suffixes: Tuple[str, ...] = (),
) -> None:
    """ValueError unless the file's tensors are this network's: at least one of its names is the
    network's, and every tensor they share has the network's shape.

    `stranger` guesses what a file sharing no name is, `remedy` says what to do about mismatched
    shapes; names ending in `shared_suffixes` do not decide whether the file belongs (a key every
    algorithm has).
    """
    if weights and own and not any(key in own for key in weights if not key.endswith(shared_suffixes)):
        raise ValueError(
            f"{file}: none of its {len(weights)} tensors belongs to this network ({stranger}), "
            f"e.g. {sorted(weights)[0]}; this network's tensors are named like {next(iter(own))}"
        )
    mismatched = [
        f"{key}: file {tuple(value.shape)} vs network {tuple(own[key].shape)}"
        for key, value in weights.items()
        if key in own and tuple(value.shape) != tuple(own[key].shape)
    ]
    if mismatched:
        raise ValueError(f"{file} does not fit this network ({len(mismatched)} tensors differ in shape: {describe(mismatched)}). {remedy}")


def log_load_info(logger: logging.Logger, file: str, info) -> None:
    """Warn on the caller's logger about what a non-strict load_state_dict left out, either way."""
    if info.unexpected_keys:
        logger.warning("%s: %d tensors match no module of this network and were ignored, e.g. %s", file, len(info.unexpected_keys), info.unexpected_keys[0])
    if info.missing_keys:
        logger.warning("%s: %d tensors of this network were not in the file and keep their init, e.g. %s", file, len(info.missing_keys), info.missing_keys[0])
