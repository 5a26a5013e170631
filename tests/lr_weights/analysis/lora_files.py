"""LoRA files for the analyze tests, written by lr_weights' own networks over the tiny models,
then edited tensor by tensor (rows kept, zeroed or scaled)."""

from typing import Iterable, Optional

import torch
from safetensors.torch import load_file, save_file

from lr_weights.files.io import read_metadata


def row_of(name: str, arch) -> str:
    if name.startswith("lora_unet_"):
        return arch.block_name(arch.locate(name))
    return arch.text_encoder_label(name)


def write_network_file(path, denoiser, network: str = "lora", seed: int = 0, std: float = 0.1, dtype=torch.float32, **network_args):
    """A trained-looking file: every lora_up drawn N(0, std) (training starts them at 0)."""
    torch.manual_seed(seed)
    encoders = list(denoiser.text_encoders) if denoiser.model in ("sdxl", "flux") else denoiser.text_encoders[0]
    if denoiser.model == "flux":
        from lr_weights import flux as module
    else:
        module = __import__(f"lr_weights.{network}", fromlist=["create_network"])
    created = module.create_network(1.0, 4, 2, None, encoders, denoiser.net, **network_args)
    with torch.no_grad():
        for lora in created.text_encoder_loras + created.unet_loras:
            for up in (lora.lora_up if isinstance(lora.lora_up, torch.nn.ModuleList) else [lora.lora_up]):
                up.weight.normal_(0, std)
    created.save_weights(str(path), dtype, {})
    return path


def edit_file(source, target, arch, keep: Optional[Iterable[str]] = None, zero: Iterable[str] = (), scale: float = 1.0):
    """Copy a LoRA file, lora_up x `scale`; rows outside `keep` (when given) or in `zero` set to 0."""
    tensors = load_file(str(source))
    keep = None if keep is None else set(keep)
    zero = set(zero)
    for key, value in tensors.items():
        if not key.endswith(".lora_up.weight"):
            continue
        row = row_of(key.split(".", 1)[0], arch)
        factor = 0.0 if (keep is not None and row not in keep) or row in zero else scale
        tensors[key] = value * factor
    save_file(tensors, str(target), read_metadata(str(source)))
    return target


def random_lora(path, layers, select, rank=2, seed=0, std=0.3):
    """A hand-written sd-scripts LoRA over the named layers `select` picks (k x k convs as LoCon)."""
    torch.manual_seed(seed)
    tensors = {}
    for name, layer in sorted(layers.items()):
        if not select(name):
            continue
        weight = layer.weight
        if weight.dim() == 4:
            tensors[name + ".lora_down.weight"] = torch.randn(rank, weight.shape[1], *weight.shape[2:]) * std
            tensors[name + ".lora_up.weight"] = torch.randn(weight.shape[0], rank, 1, 1) * std
        else:
            tensors[name + ".lora_down.weight"] = torch.randn(rank, weight.shape[1]) * std
            tensors[name + ".lora_up.weight"] = torch.randn(weight.shape[0], rank) * std
        tensors[name + ".alpha"] = torch.tensor(float(rank))
    save_file(tensors, str(path))
    return path


def only_rows(source, target, arch, rows: Optional[Iterable[str]], grid_bits: Optional[int] = None):
    """Copy a LoRA file with only the modules of `rows` (None: all); with `grid_bits`, every factor
    rounded to a multiple of 2^-grid_bits, so that up·down·scale is exact in float32 (tests.tolerances.on_grid)."""
    from tests.tolerances import on_grid

    rows = None if rows is None else set(rows)
    kept = {}
    for key, value in load_file(str(source)).items():
        if rows is not None and row_of(key.split(".", 1)[0], arch) not in rows:
            continue
        if grid_bits is not None and key.endswith((".lora_up.weight", ".lora_down.weight")):
            value = value.clone()
            on_grid(value, grid_bits)
        kept[key] = value
    save_file(kept, str(target), read_metadata(str(source)))
    return target
