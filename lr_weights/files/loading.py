"""What a LoRA file says about its modules, checked against the model before anything is built.

Files in the wild come with or without alphas, in fp32/fp16/bf16, with sd-scripts' LDM names or
with diffusers' U-Net names (SDXL LoRAs trained by diffusers scripts), and sometimes for another
model. Everything here turns such a file into dims and alphas, or into a ValueError that names the
tensors and shapes that do not fit, so that no shape error surfaces from deep inside torch later.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Dict, Iterable, List, Mapping, MutableMapping, Sequence, Tuple

import torch
from torch import nn

if TYPE_CHECKING:
    import logging

UNET_PREFIX = "lora_unet_"

# diffusers' ResnetBlock2D layer names -> the LDM ResBlock's (sd-scripts' SDXL U-Net).
_RESNET_LAYERS = {
    "conv1": "in_layers_2",
    "conv2": "out_layers_3",
    "time_emb_proj": "emb_layers_1",
    "conv_shortcut": "skip_connection",
}
_DIFFUSERS_UPDOWN = re.compile(r"^(down|up)_blocks_(\d+)_(resnets|attentions|downsamplers|upsamplers)_(\d+)_(.+)$")
_DIFFUSERS_MID = re.compile(r"^mid_block_(resnets|attentions)_(\d+)_(.+)$")


def _resnet_layer(tail: str):
    return _RESNET_LAYERS.get(tail)


def sdxl_ldm_module_name(diffusers_name: str):
    """The sd-scripts SDXL name of a diffusers-named U-Net LoRA module, or None if it has none.

    The SDXL U-Net has three levels of two (down) or three (up) resnet/attention pairs. In the LDM
    layout every pair is one numbered block: down pair j of level i is `input_blocks_{3i+j+1}`
    (resnet at `_0`, attention at `_1`), the downsampler of level i is `input_blocks_{3(i+1)}_0_op`;
    up pair j of level i is `output_blocks_{3i+j}` and its upsampler sits third in the last pair
    (`output_blocks_{3i+2}_2`); the middle block is resnet, attention, resnet (`middle_block_0..2`).
    Inside a resnet the layers have LDM names too; inside an attention they are the same.
    """
    if not diffusers_name.startswith(UNET_PREFIX):
        return None
    rest = diffusers_name[len(UNET_PREFIX) :]
    match = _DIFFUSERS_UPDOWN.match(rest)
    if match is not None:
        direction, level, kind, index, tail = match.group(1), int(match.group(2)), match.group(3), int(match.group(4)), match.group(5)
        if direction == "down":
            if kind == "downsamplers":
                return None if (index, tail) != (0, "conv") else f"{UNET_PREFIX}input_blocks_{3 * (level + 1)}_0_op"
            block = f"input_blocks_{3 * level + index + 1}"
        else:
            if kind == "upsamplers":
                return None if index != 0 else f"{UNET_PREFIX}output_blocks_{3 * level + 2}_2_{tail}"
            block = f"output_blocks_{3 * level + index}"
        if kind == "resnets":
            layer = _resnet_layer(tail)
            return None if layer is None else f"{UNET_PREFIX}{block}_0_{layer}"
        return f"{UNET_PREFIX}{block}_1_{tail}"
    match = _DIFFUSERS_MID.match(rest)
    if match is not None:
        kind, index, tail = match.group(1), int(match.group(2)), match.group(3)
        if kind == "attentions":
            return None if index != 0 else f"{UNET_PREFIX}middle_block_1_{tail}"
        layer = _resnet_layer(tail)
        return None if layer is None or index > 1 else f"{UNET_PREFIX}middle_block_{2 * index}_{layer}"
    return None


def uses_ldm_unet_names(unet_target_names: Iterable[str]) -> bool:
    """Whether the model's U-Net LoRA names are LDM-style (sd-scripts' SDXL U-Net)."""
    return any(name.startswith(UNET_PREFIX + "input_blocks_") or name.startswith(UNET_PREFIX + "middle_block_") for name in unet_target_names)


def rename_diffusers_unet_keys(weights: MutableMapping[str, torch.Tensor]) -> List[str]:
    """Rename diffusers-named SDXL U-Net LoRA tensors to sd-scripts' names, in place (as upstream).

    Returns the module names that look diffusers-named but have no SDXL counterpart (left as they
    are; the caller reports them as unmatched).
    """
    renames: Dict[str, str] = {}
    unknown = set()
    for key in list(weights):
        module, dot, suffix = key.partition(".")
        if not dot or not module.startswith(UNET_PREFIX):
            continue
        rest = module[len(UNET_PREFIX) :]
        if not (rest.startswith("down_blocks_") or rest.startswith("up_blocks_") or rest.startswith("mid_block_")):
            continue
        new = sdxl_ldm_module_name(module)
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
