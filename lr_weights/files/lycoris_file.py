"""LyCORIS files (LoKr, LoHa, LoCon with tucker or DoRA, IA3, full, GLoRA, OFT): what each block
learned, and LBW weights baked in exactly.

Any LyCORIS file, ours or anyone's: modules are rebuilt by lycoris-lora's own loader
(lycoris_library.module_from_state_dict) over sd-scripts' module trees on the meta device, and ΔW
is what the module's forward adds (lycoris_library.delta_weight). Baking scales ONE factor of each
module's product, so ΔW scales exactly by the block's weight and every key and shape stays: a
LoKr's w1 (never w1 and w2), a LoHa's first Hadamard half, a LoCon's up, IA3's vector, full's diff.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from lr_weights.archs.base import Architecture
from lr_weights.archs.blocks import detect_architecture
from lr_weights.archs.detect import architecture_of_model, model_from_lora_names, models_of_architecture
from lr_weights.errors import NetworkArgError
from lr_weights.adapters.lycoris_library import algo_of, delta_weight, module_from_state_dict, module_names

logger = logging.getLogger(__name__)

# Tensor suffixes that only LyCORIS writes (a plain sd-scripts LoRA has lora_up/lora_down/alpha).
_LYCORIS_SUFFIXES = (
    "lokr_w1", "lokr_w1_a", "hada_w1_a", "oft_blocks", "on_input", "diff", "a1.weight", "dora_scale",
    "lora_mid.weight", "lambda_layer",
)
# The one factor per algorithm whose scaling by w scales ΔW by w. GLoRA's ΔW = W·A + B has two
# independent terms, each linear in one factor. OFT (a rotation) and DoRA (a renormalisation) are
# not linear in any stored tensor, so they cannot be baked without the base model.
_BAKE_FACTORS = {
    "locon": (("lora_up.weight",),),
    "loha": (("hada_w1_a",),),
    "kron": (("lokr_w1", "lokr_w1_a"),),  # whichever the module stores: w1 full or its low-rank a
    "ia3": (("weight",),),
    "full": (("diff",), ("diff_b",)),
    "glora": (("a2.weight",), ("b2.weight",)),
}
_NEEDS_BASE = ("ia3", "diag-oft", "boft", "glora")


def is_lycoris_file(keys) -> bool:
    """True when the keys hold tensors only LyCORIS writes."""
    return any(key.split(".", 1)[-1] in _LYCORIS_SUFFIXES for key in keys if "." in key)


@dataclass(frozen=True)
class LycorisModuleInfo:
    name: str
    block: int
    is_unet: bool
    algo: str
    norm: float  # ‖ΔW‖ (Frobenius) at multiplier 1; for base-dependent algorithms ‖learned tensors‖
    exact: bool  # False where ΔW needs the base model's weights (IA3, OFT, GLoRA, DoRA)


@dataclass
class LycorisSummary:
    path: str
    file_bytes: int
    model: str
    arch: Architecture
    algos: Dict[str, int]
    modules: List[LycorisModuleInfo]
    metadata: Dict[str, str] = field(default_factory=dict)

    def block_rows(self) -> List[dict]:
        groups: Dict[Tuple[int, str], List[LycorisModuleInfo]] = {}
        for m in self.modules:
            key = (-2, "TE") if not m.is_unet else ((10_000, "unknown") if m.block < 0 else (m.block, self.arch.block_name(m.block)))
            groups.setdefault(key, []).append(m)
        rows = []
        for (index, name), members in sorted(groups.items()):
            rows.append({
                "block": name,
                "index": index if 0 <= index < 10_000 else None,
                "modules": len(members),
                "algos": sorted({m.algo for m in members}),
                "norm": sum(m.norm ** 2 for m in members) ** 0.5,
                "exact": all(m.exact for m in members),
            })
        return rows


def _layers(model: str) -> Dict[str, torch.nn.Module]:
    from lr_weights.models.reference import build_reference_model

    return model_layers(*build_reference_model(model), architecture_of_model(model))


def model_layers(text_encoder, unet, arch: Optional[Architecture] = None) -> Dict[str, torch.nn.Module]:
    """Every module of a (text encoder(s), U-Net) pair under its LyCORIS/sd-scripts module name
    (`arch` None: the U-Net kind's, read off `unet`)."""
    arch = arch or detect_architecture(unet)
    encoders = text_encoder if isinstance(text_encoder, (list, tuple)) else [text_encoder]
    layers = {}
    for prefix, encoder in zip(arch.encoder_prefixes(len(encoders)), encoders):
        layers.update({f"{prefix}_{n}".replace(".", "_"): m for n, m in encoder.named_modules()})
    layers.update({f"{arch.unet_prefix}_{n}".replace(".", "_"): m for n, m in unet.named_modules()})
    return layers


def _model_of(names: List[str]) -> List[str]:
    """Candidate models, most likely first: the one the names tell, then those of its layout
    (sd1 and sd2 are told apart by trying to rebuild)."""
    found = model_from_lora_names(names)
    return models_of_architecture(architecture_of_model(found), first=found)


def _learned_norm(weights: Mapping[str, torch.Tensor], name: str) -> float:
    return float(sum(v.float().pow(2).sum() for k, v in weights.items() if k.startswith(name + ".") and not k.endswith(".alpha")) ** 0.5)


def read_lycoris_summary(path: str, model: Optional[str] = None, layers: Optional[Mapping[str, torch.nn.Module]] = None) -> LycorisSummary:
    """Per-module ‖ΔW‖ of a LyCORIS file, each module rebuilt by lycoris-lora from the file."""
    from lr_weights.files.io import load_lora_file, read_metadata
    from lr_weights.adapters.lycoris_library import import_lycoris

    import_lycoris()
    weights = load_lora_file(path)
    names = module_names(list(weights))
    metadata = read_metadata(path) if str(path).endswith(".safetensors") else {}
    if layers is not None:  # a model in memory (tests, scripts): its own layers, no reference tree
        return _summarise(path, weights, names, model or _model_of(names)[0], metadata, layers)
    candidates = [model] if model else _model_of(names)
    last_error: Optional[Exception] = None
    for candidate in candidates:
        try:
            return _summarise(path, weights, names, candidate, metadata, _layers(candidate))
        except (RuntimeError, ValueError) as error:  # shapes of another model: try the next one
            last_error = error
    raise ValueError(f"{path}: its modules do not fit {' or '.join(candidates)} ({last_error})")


def _summarise(path, weights, names, model, metadata, layers) -> LycorisSummary:
    arch = architecture_of_model(model)
    modules = []
    algos: Dict[str, int] = {}
    for name in names:
        layer = layers.get(name)
        algo = algo_of(weights, name) or "?"
        if layer is None:
            raise ValueError(f"module {name} names no layer of {model}")
        is_unet = arch.is_denoiser_name(name)
        block = arch.locate(name) if is_unet else -1
        algos[algo] = algos.get(algo, 0) + 1
        wd = f"{name}.dora_scale" in weights
        if algo in _NEEDS_BASE or wd:
            modules.append(LycorisModuleInfo(name, block, is_unet, algo, _learned_norm(weights, name), False))
            continue
        if algo == "full":
            diff = weights[f"{name}.diff"].float()
            modules.append(LycorisModuleInfo(name, block, is_unet, algo, float(diff.norm()), True))
            continue
        module = module_from_state_dict(weights, name, layer)
        if module is None:
            raise ValueError(f"lycoris-lora cannot rebuild module {name}")
        diff, _ = delta_weight(module)
        modules.append(LycorisModuleInfo(name, block, is_unet, algo, float(diff.float().norm()), True))
    return LycorisSummary(os.fspath(path), os.path.getsize(path), model, arch, algos, modules, dict(metadata))


@dataclass(frozen=True)
class LycorisBakeResult:
    modules: int
    scaled: Dict[str, float]  # block label -> weight applied
    factors: Dict[str, int]  # tensor suffix -> how many were scaled


def bake_lycoris(path: str, output: str, lbw: str, model: Optional[str] = None) -> LycorisBakeResult:
    """Scale one factor of every module by its block's LBW weight (BASE for text encoders); keep
    every key and shape (weight 0 zeroes the factor), so whatever loaded the input loads the output."""
    from lr_weights.files.io import atomic_write_bytes, load_lora_file, read_metadata, save_lora_file
    from lr_weights.args.lbw import lbw_vector, parse_lbw

    weights = load_lora_file(path)
    names = module_names(list(weights))
    model = model or _model_of(names)[0]
    arch = architecture_of_model(model)
    vector = parse_lbw(arch, lbw, key="--lbw")
    out = dict(weights)
    scaled: Dict[str, float] = {}
    factors: Dict[str, int] = {}
    for name in names:
        algo = algo_of(weights, name)
        if f"{name}.dora_scale" in weights:
            raise NetworkArgError("--lbw", lbw, f"a file without DoRA (dora_wd): {name} renormalises W + ΔW, which no scaled tensor reproduces without the base model")
        if algo not in _BAKE_FACTORS:
            raise NetworkArgError("--lbw", lbw, f"a file of algorithms bake can scale exactly ({', '.join(sorted(_BAKE_FACTORS))}); {name} is {algo}, which is not linear in any stored tensor")
        if arch.is_denoiser_name(name):
            block = arch.locate(name)
            weight, label = (1.0, "unknown") if block < 0 else (vector.blocks[block], arch.block_name(block))
        else:
            weight, label = vector.base, "BASE"
        scaled[label] = weight
        if weight == 1:
            continue
        for alternatives in _BAKE_FACTORS[algo]:
            key = next((f"{name}.{s}" for s in alternatives if f"{name}.{s}" in weights), None)
            if key is None:
                continue
            tensor = weights[key]
            out[key] = (tensor.float() * weight).to(tensor.dtype)
            factors[key.split(".", 1)[1]] = factors.get(key.split(".", 1)[1], 0) + 1
    metadata = read_metadata(path) if str(path).endswith(".safetensors") else {}
    applied = lbw_vector(arch, vector.blocks, vector.base) if not (arch.is_sdxl and len(set(vector.mid)) > 1) else lbw
    previous = metadata.get("lr_weights_baked_lbw")
    metadata["lr_weights_baked_lbw"] = applied if previous is None else previous + " ; " + applied
    metadata["lr_weights_baked_from"] = os.path.basename(os.fspath(path))
    if str(output).endswith(".safetensors"):
        from lycoris.utils import precalculate_safetensors_hashes
        from safetensors.torch import save

        tensors = {k: v.contiguous() for k, v in out.items()}
        if "sshs_model_hash" in metadata:  # LyCORIS' own hash of the new tensors
            metadata["sshs_model_hash"] = precalculate_safetensors_hashes(tensors)
        metadata.pop("sshs_legacy_hash", None)
        atomic_write_bytes(os.fspath(output), save(tensors, metadata))
    else:
        save_lora_file(os.fspath(output), out)
    return LycorisBakeResult(len(names), scaled, factors)
