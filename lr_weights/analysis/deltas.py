"""Each module's ΔW from a LoRA file, grouped into the rows the measure ablates.

sd-scripts LoRA / LoCon / DyLoRA / FLUX files (split_qkv ones are stored merged) are read by
lr_weights.files.lora_file (ΔW = up·down·alpha/dim, kept factored until merged); LyCORIS files
(LoKr, LoHa, ...) by lycoris-lora's own modules over the model's real layers
(lr_weights.files.lycoris_file). Rows are block names (IN04, D03, ...) and text-encoder labels
(TE, TE1, TE2, TE3). Every check that can fail is made here, before the measure starts.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from lr_weights.archs.base import Architecture
from lr_weights.archs.detect import architecture_of_model

UNKNOWN = 10_000  # sorts after every block


@dataclass(frozen=True)
class ModuleDelta:
    name: str
    row: str  # block name or text-encoder label
    index: int  # flat block index; -1 for text encoders, UNKNOWN for U-Net layers in no block
    down: Optional[torch.Tensor] = None  # LoRA factors (ΔW = up @ down x scale) ...
    up: Optional[torch.Tensor] = None
    scale: float = 1.0
    dense: Optional[torch.Tensor] = None  # ... or ΔW itself (LyCORIS)
    bias: Optional[torch.Tensor] = None

    @property
    def is_unet(self) -> bool:
        return self.index >= 0

    @property
    def loaded(self) -> bool:
        """False for a module of a text encoder the model was loaded without: named (a row the
        measure leaves out, as without --prompt), no ΔW (LyCORIS' needs the encoder's weights)."""
        return self.dense is not None or self.down is not None

    def weight(self, device: torch.device) -> torch.Tensor:
        """ΔW in float32 on `device`, the layer's weight shape."""
        if self.dense is not None:
            return self.dense.to(device, torch.float32)
        from lr_weights.adapters.functional import delta_weight

        return delta_weight(self.down.to(device), self.up.to(device), self.scale)

    def to(self, device: torch.device) -> "ModuleDelta":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return ModuleDelta(self.name, self.row, self.index, move(self.down), move(self.up), self.scale, move(self.dense), move(self.bias))


@dataclass(frozen=True)
class LoraDeltas:
    path: str
    model: str  # as read off the file's names: sd1 | sd2 | sdxl | flux
    kind: str  # "LoRA" or "LyCORIS (lokr, ...)"
    modules: Tuple[ModuleDelta, ...]
    norms: Mapping[str, float]  # row -> ‖ΔW‖ over its modules, as `lr-weights inspect` reports it

    def rows(self, text_encoders: bool) -> List[str]:
        """Rows in LBW order: text encoders first, then blocks by index."""
        seen = {(m.index, m.row) for m in self.modules if text_encoders or m.is_unet}
        return [row for _, row in sorted(seen)]


def _family_error(path: str, found: str, model: str, model_path: str) -> ValueError:
    return ValueError(f"{path} is a {found.upper()} LoRA (from its module names) but the model {model_path} is {model.upper()}: expected a LoRA trained on {model.upper()}")


def _keys(path: str) -> List[str]:
    from lr_weights.files.lora_file import _open

    with _open(path) as handle:
        return list(handle.keys())


def lora_model_of_names(path: str, keys: List[str]) -> str:
    """sd1/sd2/sdxl/flux of a LoRA or LyCORIS file from its key names (SD1 and SD2 apart by one
    attention shape, read without loading it)."""
    from lr_weights.archs.detect import model_from_lora_names
    from lr_weights.files.lora_file import _open

    names = sorted({k.split(".", 1)[0] for k in keys if k.startswith("lora_")} | {k.rsplit(".", 2)[0] for k in keys if k.startswith("transformer.")})
    if not names:
        raise ValueError(f"{path} holds no LoRA modules (no lora_unet_* / lora_te* / transformer.* keys); it has {', '.join(keys[:3]) or 'no tensors at all'}")
    with _open(path) as handle:

        def shape(name: str) -> Tuple[int, ...]:
            key = name + ".lora_down.weight"
            return tuple(handle.get_slice(key).get_shape()) if key in keys else (0, 0)

        return model_from_lora_names(names, shape)


def check_file(path: str, model: str, model_path: str, keys: Optional[List[str]] = None) -> str:
    """The file's model, from its names only; errors naming the path when its family is not the
    model's or when it changes nothing the measure looks at (no U-Net / flow-model module)."""
    keys = _keys(path) if keys is None else keys
    found = lora_model_of_names(path, keys)
    if architecture_of_model(found) is not architecture_of_model(model):  # sd1 and sd2 share their blocks
        raise _family_error(path, found, model, model_path)
    if not any(k.startswith(("lora_unet_", "transformer.")) for k in keys):
        unet = "flow-model" if model == "flux" else "U-Net"
        raise ValueError(f"{path} has no {unet} modules (only text encoder ones): expected a LoRA that changes the {unet}, which is what analyze measures")
    return found


def _row(name: str, arch: Architecture) -> Tuple[str, int]:
    if name.startswith(arch.unet_prefix + "_") or name.startswith("transformer."):
        index = arch.locate(name)
        return (arch.block_name(index), index) if index >= 0 else ("unknown", UNKNOWN)
    return arch.text_encoder_label(name), -1


def _unloaded_text_encoder(name: str, layers: Mapping[str, nn.Module], arch: Architecture) -> bool:
    """Whether `name` is a module of a text encoder the model was loaded without (FLUX.1 without
    --clip-l/--t5xxl): no layer carries its encoder's prefix."""
    prefix = next((p for p, _ in arch.text_encoder_prefixes if name.startswith(p)), None)
    return prefix is not None and not any(layer.startswith(prefix) for layer in layers)


def _layer(path: str, name: str, layers: Mapping[str, nn.Module], model: str) -> nn.Module:
    layer = layers.get(name)
    if layer is None:
        raise ValueError(f"{path}: module {name} names no layer of the {model.upper()} model (a LoRA for another model, or a naming this tool does not map)")
    return layer


def _check_shape(path: str, name: str, delta: Tuple[int, ...], layer: nn.Module, model: str) -> None:
    if tuple(delta) != tuple(layer.weight.shape):
        raise ValueError(
            f"{path}: module {name} changes a {tuple(delta)} weight but the {model.upper()} model's layer is {tuple(layer.weight.shape)}: expected a LoRA of this model (SD1 and SD2 differ here)"
        )


def _lora_modules(path: str, layers, arch, model: str) -> List[ModuleDelta]:
    from lr_weights.files.lora_file import read_factors

    _, factors = read_factors(path)
    modules = []
    for f in factors:
        if _unloaded_text_encoder(f.name, layers, arch):
            modules.append(ModuleDelta(f.name, *_row(f.name, arch)))
            continue
        layer = _layer(path, f.name, layers, model)
        rank = f.down.shape[0]
        shape = (f.up.shape[0], f.down.shape[1]) + tuple(f.down.shape[2:])
        if f.up.reshape(f.up.shape[0], -1).shape[1] != rank:
            raise ValueError(f"{path}: module {f.name} has lora_up {tuple(f.up.shape)} and lora_down {tuple(f.down.shape)}, which do not fit together")
        _check_shape(path, f.name, shape, layer, model)
        row, index = _row(f.name, arch)
        modules.append(ModuleDelta(f.name, row, index, f.down.float(), f.up.float(), f.scale))
    return modules


def _lycoris_modules(path: str, layers, arch, model: str) -> Tuple[List[ModuleDelta], str]:
    from lr_weights.adapters.lycoris_library import algo_of, delta_weight, module_from_state_dict, module_names
    from lr_weights.files.io import load_lora_file

    weights = load_lora_file(path)
    modules = []
    for name in module_names(list(weights)):
        if _unloaded_text_encoder(name, layers, arch):
            modules.append(ModuleDelta(name, *_row(name, arch)))
            continue
        layer = _layer(path, name, layers, model)
        # lycoris-lora reads the base weight (DoRA, IA3, OFT); it gets a float32 CPU copy, never the model's own.
        base = copy.deepcopy(layer).to("cpu", torch.float32)
        module = module_from_state_dict(weights, name, base)
        if module is None:
            raise ValueError(f"{path}: lycoris-lora cannot rebuild module {name}")
        diff, bias = delta_weight(module)
        _check_shape(path, name, tuple(diff.shape), layer, model)
        row, index = _row(name, arch)
        modules.append(ModuleDelta(name, row, index, dense=diff.float(), bias=None if bias is None else bias.float()))
    algos = sorted({algo_of(weights, m.name) or "?" for m in modules})
    return modules, f"LyCORIS ({', '.join(algos)})"


def _norms(modules: List[ModuleDelta]) -> Dict[str, float]:
    """‖ΔW‖ per row: the root of the sum of its modules' squared Frobenius norms, as `inspect` sums
    them; LoRA modules by inspect's own Gram formula, LyCORIS ones from ΔW on the real base weights."""
    from lr_weights.files.lora_file import delta_norm

    squares: Dict[str, float] = {}
    for m in modules:
        if not m.loaded:
            continue
        norm = float(m.dense.norm()) if m.dense is not None else delta_norm(m.down, m.up, m.scale)
        squares[m.row] = squares.get(m.row, 0.0) + norm * norm
    return {row: value ** 0.5 for row, value in squares.items()}


def read_deltas(path: str, layers: Mapping[str, nn.Module], arch: Architecture, model: str, model_path: str = "the model") -> LoraDeltas:
    """Every module of the file at `path` as a ΔW on the denoiser's `layers`; errors before any work."""
    from lr_weights.files.lycoris_file import is_lycoris_file

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"LoRA file not found: {path}")
    keys = _keys(path)
    found = check_file(path, model, model_path, keys)
    lycoris = is_lycoris_file(keys)
    modules, kind = _lycoris_modules(path, layers, arch, model) if lycoris else (_lora_modules(path, layers, arch, model), "LoRA")
    return LoraDeltas(path, found, kind, tuple(modules), _norms(modules))
