"""Which base layers get an adapter, and what they are called (CONTRACT §3).

Targets are chosen by class name, as sd-scripts does, so a model rebuilt from recorded module
skeletons (same names, same class names) gives the same LoRA names in the same order. Only the
layers' shapes are read, never their weights, so this works on the `meta` device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Mapping, Optional, Sequence, Tuple

from torch import nn

from lr_weights.archs.base import Architecture


@dataclass(frozen=True)
class Target:
    lora_name: str
    layer: nn.Module
    block: int  # sd-scripts block index; -1 for text encoders and unknown U-Net layers
    is_unet: bool

    @property
    def is_conv_kxk(self) -> bool:
        return type(self.layer).__name__ == "Conv2d" and tuple(self.layer.kernel_size) != (1, 1)


def _adaptable(module: nn.Module) -> bool:
    return type(module).__name__ in ("Linear", "Conv2d")


def _walk(root: nn.Module, prefix: str, is_target_class) -> Iterator[Tuple[str, nn.Module]]:
    # Upstream visits every matching container and then every Linear/Conv2d below it, in
    # named_modules() order; a layer below two matching containers is visited twice there, which
    # its duplicate-name assert forbids. We keep the order and skip a name already seen.
    seen = set()
    for name, module in root.named_modules():
        if not is_target_class(type(module).__name__):
            continue
        for child_name, child in module.named_modules():
            if not _adaptable(child):
                continue
            lora_name = ".".join(p for p in (prefix, name, child_name) if p != "").replace(".", "_")
            if lora_name in seen:
                continue
            seen.add(lora_name)
            yield lora_name, child


def text_encoder_targets(text_encoders: Sequence[nn.Module], arch: Architecture) -> List[Target]:
    targets = []
    for prefix, encoder in zip(arch.encoder_prefixes(len(text_encoders)), text_encoders):
        if encoder is None:
            continue
        for lora_name, layer in _walk(encoder, prefix, arch.is_text_encoder_target_class):
            targets.append(Target(lora_name, layer, -1, False))
    return targets


def unet_targets(unet: Optional[nn.Module], arch: Architecture, include_conv: bool) -> List[Target]:
    if unet is None:
        return []
    classes = arch.unet_target_classes + (arch.unet_conv_target_classes if include_conv else ())
    return block_targets(unet, arch, classes)


def as_text_encoder_list(text_encoder) -> List[nn.Module]:
    if text_encoder is None:
        return []
    if isinstance(text_encoder, (list, tuple)):
        return list(text_encoder)
    return [text_encoder]


# ---- the DiT kind (sd-scripts networks/lora_flux.py and the modules after its pattern) ----------


def dit_text_encoder_targets(text_encoders: Sequence[Optional[nn.Module]], arch: Architecture, flags: Mapping[str, bool]) -> List[Target]:
    """The encoders in the host's order, each under its prefix in the arch (FLUX: CLIP-L, then
    T5-XXL); a None encoder (Chroma has no CLIP-L) is skipped; at the first encoder whose
    flag (train_t5xxl) is off, upstream stops."""
    specs = arch.dit.text_encoders
    targets = []
    for index, encoder in enumerate(text_encoders):
        if encoder is None:
            continue
        spec = specs[min(index, len(specs) - 1)]
        if spec.trained_by is not None and not flags.get(spec.trained_by):
            break
        for lora_name, layer in _walk(encoder, spec.prefix, arch.is_text_encoder_target_class):
            targets.append(Target(lora_name, layer, -1, False))
    return targets


def block_targets(model: Optional[nn.Module], arch: Architecture, classes: Sequence[str]) -> List[Target]:
    """Every Linear/Conv2d under the given block classes, in model order, named under the arch's prefix."""
    if model is None:
        return []
    wanted = tuple(classes)
    return [Target(name, layer, arch.locate(name), True) for name, layer in _walk(model, arch.unet_prefix, lambda c: c in wanted)]


def filtered_targets(model: Optional[nn.Module], arch: Architecture, name_filter: str) -> List[Target]:
    """Every Linear/Conv2d of the whole model whose LoRA name contains `name_filter` (upstream's in_dims search)."""
    if model is None:
        return []
    targets = []
    for child_name, child in model.named_modules():
        if not _adaptable(child):
            continue
        lora_name = f"{arch.unet_prefix}.{child_name}".replace(".", "_")
        if name_filter in lora_name:
            targets.append(Target(lora_name, child, arch.locate(lora_name), True))
    return targets


def file_targets(arch: Architecture, text_encoders: Sequence[Optional[nn.Module]], model: Optional[nn.Module], keys: Sequence[str]) -> Tuple[List[Target], List[Target]]:
    """Every layer a LoRA file of `arch` may hold modules for, as upstream's from-weights path finds
    them: (text-encoder targets, the U-Net's / flow model's). The U-Net kind: LoCon's convs too. The
    DiT kind: an encoder with a flag (T5) when the file has its keys, every block, the in layers."""
    if arch.dit is None:
        return text_encoder_targets(text_encoders, arch), unet_targets(model, arch, include_conv=True)
    flags = {e.trained_by: any(str(key).startswith(e.prefix) for key in keys) for e in arch.dit.text_encoders if e.trained_by is not None}
    rest = block_targets(model, arch, arch.dit.all_block_classes)
    for name_filter in arch.dit.in_filters:
        rest += filtered_targets(model, arch, name_filter)
    return dit_text_encoder_targets(text_encoders, arch, flags), rest


def blocks_with_modules(arch: Architecture, include_conv: bool) -> "frozenset":
    """The block indices that hold at least one adapter module, found the way a network finds its
    targets, on sd-scripts' own module tree (the family's first model: SD1 stands for SD1/SD2,
    whose blocks are laid out alike)."""
    from lr_weights.models.reference import build_reference_model  # meta-device trees: only the CLI asks

    _, denoiser = build_reference_model(arch.models[0].name)
    return frozenset(t.block for t in unet_targets(denoiser, arch, include_conv) if t.block >= 0)
