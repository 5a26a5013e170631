"""What a LoRA file holds, block by block, and LBW weights baked into a new file.

Works on any sd-scripts-format LoRA (`<name>.lora_down.weight`, `<name>.lora_up.weight`,
`<name>.alpha`), ours or anyone's. Reading streams one module at a time through safetensors'
`safe_open`, so a 1 GB file is inspected with the memory of its largest module.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch

from lr_weights.archs.base import Architecture
from lr_weights.archs.detect import architecture_of_model, model_from_lora_names
from lr_weights.errors import NetworkArgError

logger = logging.getLogger(__name__)

_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".alpha")
# diffusers / PEFT / ai-toolkit files (FLUX LoRAs are often shared so): lora_A = down, lora_B = up.
_PEFT_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".alpha")

Progress = Callable[[Iterable, Optional[int], str], Iterable]


@dataclass(frozen=True)
class ModuleInfo:
    name: str
    block: int  # sd-scripts block index; -1 for text encoders and unknown U-Net modules
    is_unet: bool
    kind: str  # linear | conv1x1 | conv
    dim: int
    alpha: float
    norm: float  # Frobenius norm of ΔW = up @ down * alpha / dim


@dataclass
class LoraSummary:
    path: str
    file_bytes: int
    model: str  # a model of archs/ (sd1 | sd2 | sdxl | flux ...)
    arch: Architecture
    dtypes: List[str]
    metadata: Dict[str, str]
    modules: List[ModuleInfo]
    ignored_keys: List[str] = field(default_factory=list)

    def block_rows(self) -> List[dict]:
        """One row per text encoder / block with modules: counts, dims, alphas, norms."""
        groups: Dict[Tuple[int, str], List[ModuleInfo]] = {}
        for module in self.modules:
            if not module.is_unet:
                key = (-2, self.arch.text_encoder_label(module.name))
            elif module.block < 0:
                key = (10_000, "unknown")
            else:
                key = (module.block, self.arch.block_name(module.block))
            groups.setdefault(key, []).append(module)
        all_rms = _rms([m.norm for m in self.modules])
        rows = []
        for (index, name), members in sorted(groups.items()):
            norms = [m.norm for m in members]
            rms = _rms(norms)
            rows.append(
                {
                    "block": name,
                    "index": index if 0 <= index < 10_000 else None,
                    "modules": len(members),
                    "dims": sorted({m.dim for m in members}),
                    "alphas": sorted({m.alpha for m in members}),
                    "norm": math.sqrt(sum(n * n for n in norms)),
                    "norm_per_module": rms,
                    "relative": rms / all_rms if all_rms > 0 else 0.0,
                }
            )
        return rows

    def training_blocks(self) -> Optional[list]:
        text = self.metadata.get("lr_weights_blocks")
        if not text:
            return None
        try:
            rows = json.loads(text)
        except ValueError:
            return None
        return rows if isinstance(rows, list) else None


def _rms(values: List[float]) -> float:
    return math.sqrt(sum(v * v for v in values) / len(values)) if values else 0.0


def delta_norm(down: torch.Tensor, up: torch.Tensor, scale: float) -> float:
    """‖up @ down‖_F x scale without forming ΔW: sqrt(sum((UᵀU) ∘ (D Dᵀ))), both rank x rank."""
    rank = down.shape[0]
    d = down.reshape(rank, -1).float()
    u = up.reshape(up.shape[0], -1).float()
    if u.shape[1] != rank:
        raise ValueError(f"lora_up has {u.shape[1]} input rows but lora_down has rank {rank}")
    squared = float(((u.T @ u) * (d @ d.T)).sum())
    return math.sqrt(max(squared, 0.0)) * abs(scale)


def _kind(down: torch.Tensor) -> str:
    if down.dim() == 2:
        return "linear"
    return "conv1x1" if tuple(down.shape[2:]) == (1, 1) else "conv"


def choose_model(path: str, names: List[str], shapes: Callable[[str], Tuple[int, ...]], given: Optional[str]) -> str:
    """The model read off the names, or `given` (--arch) when it has the same block layout.

    SD1 and SD2 share their blocks, so --arch may pick between them; relabelling a file as another
    layout (SD as SDXL, FLUX as SD, ...) would put every module in no block, so that is refused.
    """
    found = model_from_lora_names(names, shapes)
    if given is not None and architecture_of_model(given) is not architecture_of_model(found):
        raise NetworkArgError(
            "--arch", given, f"the architecture of {path}, whose module names are {found}'s (leave --arch out to use them)"
        )
    return given or found


def _module_names(keys: Iterable[str]) -> Tuple[List[str], List[str]]:
    names: Dict[str, None] = {}
    ignored = []
    for key in keys:
        for suffix in _SUFFIXES + _PEFT_SUFFIXES[:2]:
            if key.endswith(suffix):
                names[key[: -len(suffix)]] = None
                break
        else:
            ignored.append(key)
    return list(names), ignored


def _module_keys(name: str, keys) -> Tuple[str, str, str]:
    """(down key, up key, alpha key) of a module, in the file's naming (sd-scripts or PEFT)."""
    suffixes = _PEFT_SUFFIXES if name + _PEFT_SUFFIXES[0] in keys or name + _PEFT_SUFFIXES[1] in keys else _SUFFIXES
    return tuple(name + s for s in suffixes)


def _open(path: str):
    from safetensors import safe_open

    from lr_weights.files.io import require_file

    path = require_file(path)
    try:
        return safe_open(path, framework="pt")
    except Exception as error:
        raise ValueError(f"{path} is not a readable safetensors file ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None


def _check_names(path: str, names: List[str], keys: List[str]) -> None:
    if not names:
        shown = ", ".join(keys[:3]) if keys else "no tensors at all"
        raise ValueError(f"{path} holds no sd-scripts LoRA tensors (<name>.lora_down.weight / .lora_up.weight / .alpha); it has {shown}")


def _check_complete(path: str, name: str, keys) -> None:
    down_key, up_key, _ = _module_keys(name, keys)
    has_down, has_up = down_key in keys, up_key in keys
    if not (has_down and has_up):
        missing = "no lora_up" if has_down else "no lora_down"
        raise ValueError(f"{path}: module {name} has {missing} tensor (a damaged or non-LoRA file)")


def read_summary(path: str, progress: Optional[Progress] = None, model: Optional[str] = None) -> LoraSummary:
    """Stream a LoRA file and measure each module's ΔW."""
    with _open(path) as handle:
        keys = list(handle.keys())
        metadata = dict(handle.metadata() or {})
        names, ignored = _module_names(keys)
        _check_names(path, names, keys)
        key_set = set(keys)
        model = choose_model(path, names, lambda n: tuple(handle.get_slice(n + ".lora_down.weight").get_shape()), model)
        arch = architecture_of_model(model)
        modules = []
        dtypes = set()
        iterator = progress(names, len(names), "inspect") if progress else names
        for name in iterator:
            _check_complete(path, name, key_set)
            down_key, up_key, alpha_key = _module_keys(name, key_set)
            down = handle.get_tensor(down_key)
            up = handle.get_tensor(up_key)
            dtypes.add(str(down.dtype).replace("torch.", ""))
            dim = int(down.shape[0])
            alpha = float(handle.get_tensor(alpha_key).float().item()) if alpha_key in key_set else float(dim)
            try:
                norm = delta_norm(down, up, alpha / dim)
            except (RuntimeError, ValueError) as error:
                raise ValueError(f"{path}: module {name} has shapes that do not fit together ({error})") from None
            is_unet = arch.is_denoiser_name(name)
            block = arch.locate(name) if is_unet else -1
            modules.append(ModuleInfo(name, block, is_unet, _kind(down), dim, alpha, norm))
    return LoraSummary(os.fspath(path), os.path.getsize(path), model, arch, sorted(dtypes), metadata, modules, ignored)


@dataclass(frozen=True)
class BakeResult:
    kept: int
    dropped: int
    scaled: Dict[str, float]  # block label -> weight applied (text encoder = "BASE")
    unknown: List[str]


def _lbw_weight(arch: Architecture, weights, name: str) -> Tuple[float, str]:
    """(LBW weight, label) of one module: its block's; a text encoder's own (FLUX: CLIP, T5) or
    BASE; 1.0 and "unknown" for a denoiser module in no block."""
    if arch.is_denoiser_name(name):
        block = arch.locate(name)
        return (1.0, "unknown") if block < 0 else (weights.blocks[block], arch.block_name(block))
    if len(arch.lbw.text_encoder_labels) > 1:  # LBW weighs each encoder (FLUX: CLIP, T5)
        label = arch.text_encoder_label(name)
        return weights.text_encoder(label), label
    return weights.base, "BASE"


def bake(
    path: str,
    output: str,
    lbw: str,
    model: Optional[str] = None,
    progress: Optional[Progress] = None,
) -> BakeResult:
    """Scale each module's lora_up by its block's LBW weight (BASE for text encoders) and save.

    Weight 0 drops the module's tensors. The file keeps its metadata, gains `lr_weights_baked_lbw`
    (the vector applied, full layout) and fresh sshs_* hashes; it is written atomically.
    """
    from lr_weights.files.io import is_same_file, save_lora_file
    from lr_weights.args.lbw import lbw_vector, parse_lbw

    with _open(path) as handle:
        keys = list(handle.keys())
        metadata = dict(handle.metadata() or {})
        names, ignored = _module_names(keys)
        _check_names(path, names, keys)
        model = choose_model(path, names, lambda n: tuple(handle.get_slice(n + ".lora_down.weight").get_shape()), model)
        arch = architecture_of_model(model)
        weights = parse_lbw(arch, lbw, key="--lbw")
        key_set = set(keys)
        tensors: Dict[str, torch.Tensor] = {}
        scaled: Dict[str, float] = {}
        unknown: List[str] = []
        dropped = 0
        iterator = progress(names, len(names), "bake") if progress else names
        for name in iterator:
            _check_complete(path, name, key_set)
            weight, label = _lbw_weight(arch, weights, name)
            if label == "unknown":
                unknown.append(name)
            scaled[label] = weight
            module_keys = [key for key in _module_keys(name, key_set) if key in key_set]
            up_key = module_keys[1] if len(module_keys) > 1 else None
            if weight == 0:
                dropped += 1
                continue
            for key in module_keys:
                tensor = handle.get_tensor(key)
                if key == up_key and weight != 1:
                    tensor = (tensor.float() * weight).to(tensor.dtype)
                tensors[key] = tensor
    if ignored:
        logger.warning("%s: %d tensors are not LoRA tensors and are left out, e.g. %s", path, len(ignored), ignored[0])
    if unknown:
        logger.warning("%s: %d U-Net modules are in no known %s block and keep weight 1, e.g. %s", path, len(unknown), arch.name.upper(), unknown[0])
    if not tensors:
        raise NetworkArgError("--lbw", lbw, f"a vector that keeps at least one module: every module of {path} has weight 0")
    applied = lbw_vector(arch, weights.blocks, weights.base, text_encoders=dict(weights.text_encoders)) if not (arch.is_sdxl and len(set(weights.mid)) > 1) else lbw
    previous = metadata.get("lr_weights_baked_lbw")
    metadata["lr_weights_baked_lbw"] = applied if previous is None else previous + " ; " + applied
    metadata["lr_weights_baked_from"] = os.path.basename(os.fspath(path)) + (f" (sshs_model_hash {metadata['sshs_model_hash']})" if "sshs_model_hash" in metadata else "")
    metadata.pop("sshs_model_hash", None)
    metadata.pop("sshs_legacy_hash", None)
    save_lora_file(os.fspath(output), tensors, metadata, keep_mode=is_same_file(path, output))
    return BakeResult(len(names) - dropped, dropped, scaled, unknown)


@dataclass(frozen=True)
class ModuleFactors:
    """One module's tensors as stored: ΔW = up @ down x alpha / dim (see functional.delta_weight)."""

    name: str
    down: torch.Tensor
    up: torch.Tensor
    alpha: float

    @property
    def scale(self) -> float:
        return self.alpha / int(self.down.shape[0])


def read_factors(path: str, model: Optional[str] = None) -> Tuple[str, List[ModuleFactors]]:
    """(model, every module's factors) of a LoRA file, read and checked as `read_summary` reads them,
    for tools that need ΔW itself rather than its norm."""
    with _open(path) as handle:
        keys = list(handle.keys())
        names, _ = _module_names(keys)
        _check_names(path, names, keys)
        key_set = set(keys)
        model = choose_model(path, names, lambda n: tuple(handle.get_slice(n + ".lora_down.weight").get_shape()), model)
        modules = []
        for name in names:
            _check_complete(path, name, key_set)
            down_key, up_key, alpha_key = _module_keys(name, key_set)
            down = handle.get_tensor(down_key)
            alpha = float(handle.get_tensor(alpha_key).float().item()) if alpha_key in key_set else float(down.shape[0])
            modules.append(ModuleFactors(name, down, handle.get_tensor(up_key), alpha))
    return model, modules
