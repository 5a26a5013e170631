"""Which base layers get an adapter, and what they are called (CONTRACT §3).

Targets are chosen by class name, as sd-scripts does, so a model rebuilt from recorded module
skeletons (same names, same class names) gives the same LoRA names in the same order. Only the
layers' shapes are read, never their weights, so this works on the `meta` device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

from torch import nn

from lr_weights.archs.blocks import LORA_PREFIX_TEXT_ENCODER, LORA_PREFIX_UNET, Architecture, block_index

UNET_ATTENTION_CLASSES = ("Transformer2DModel",)
UNET_CONV_CLASSES = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_ENCODER_CLASSES = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")


def is_text_encoder_target_class(class_name: str) -> bool:
    """CLIP attention and MLP blocks; newer transformers add attention classes with the same role
    (CLIPSdpaAttention, CLIPFlashAttention2), so any `CLIP*Attention` counts."""
    if class_name in TEXT_ENCODER_CLASSES:
        return True
    return class_name.startswith("CLIP") and class_name.endswith("Attention") and class_name != "CLIPAttention"


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


def text_encoder_prefixes(count: int) -> List[str]:
    if count == 1:
        return [LORA_PREFIX_TEXT_ENCODER]
    return [f"{LORA_PREFIX_TEXT_ENCODER}{i + 1}" for i in range(count)]


def text_encoder_targets(text_encoders: Sequence[nn.Module]) -> List[Target]:
    targets = []
    for prefix, encoder in zip(text_encoder_prefixes(len(text_encoders)), text_encoders):
        if encoder is None:
            continue
        for lora_name, layer in _walk(encoder, prefix, is_text_encoder_target_class):
            targets.append(Target(lora_name, layer, -1, False))
    return targets


def unet_targets(unet: Optional[nn.Module], arch: Architecture, include_conv: bool) -> List[Target]:
    if unet is None:
        return []
    classes = UNET_ATTENTION_CLASSES + (UNET_CONV_CLASSES if include_conv else ())
    return [
        Target(lora_name, layer, block_index(lora_name, arch), True)
        for lora_name, layer in _walk(unet, LORA_PREFIX_UNET, lambda c: c in classes)
    ]


def as_text_encoder_list(text_encoder) -> List[nn.Module]:
    if text_encoder is None:
        return []
    if isinstance(text_encoder, (list, tuple)):
        return list(text_encoder)
    return [text_encoder]



# ---- FLUX (sd-scripts networks/lora_flux.py) --------------------------------------------------

FLUX_TEXT_ENCODER_CLASSES = ("T5Attention", "T5DenseGatedActDense")
FLUX_TEXT_ENCODER_PREFIXES = ("lora_te1", "lora_te3")  # CLIP-L, T5-XXL (ComfyUI's names)


def is_flux_text_encoder_target_class(class_name: str) -> bool:
    return class_name in FLUX_TEXT_ENCODER_CLASSES or is_text_encoder_target_class(class_name)


def flux_text_encoder_targets(text_encoders: Sequence[Optional[nn.Module]], train_t5xxl: bool) -> List[Target]:
    """CLIP-L (`lora_te1_`), then T5-XXL (`lora_te3_`) only with train_t5xxl; a None encoder
    (Chroma has no CLIP-L) is skipped."""
    targets = []
    for index, encoder in enumerate(text_encoders):
        if encoder is None:
            continue
        if index > 0 and not train_t5xxl:
            break
        prefix = FLUX_TEXT_ENCODER_PREFIXES[min(index, 1)]
        for lora_name, layer in _walk(encoder, prefix, is_flux_text_encoder_target_class):
            targets.append(Target(lora_name, layer, -1, False))
    return targets


def flux_block_targets(flux: Optional[nn.Module], arch: Architecture, classes: Sequence[str]) -> List[Target]:
    """Every Linear under the given block classes (DoubleStreamBlock, SingleStreamBlock), model order."""
    if flux is None:
        return []
    wanted = tuple(classes)
    return [Target(name, layer, arch.locate(name), True) for name, layer in _walk(flux, LORA_PREFIX_UNET, lambda c: c in wanted)]


def flux_filtered_targets(flux: Optional[nn.Module], arch: Architecture, name_filter: str) -> List[Target]:
    """Every Linear/Conv2d of the whole model whose LoRA name contains `name_filter` (upstream's in_dims search)."""
    if flux is None:
        return []
    targets = []
    for child_name, child in flux.named_modules():
        if not _adaptable(child):
            continue
        lora_name = f"{LORA_PREFIX_UNET}.{child_name}".replace(".", "_")
        if name_filter in lora_name:
            targets.append(Target(lora_name, child, arch.locate(lora_name), True))
    return targets


def blocks_with_modules(arch: "Architecture", include_conv: bool) -> "frozenset":
    """The block indices that hold at least one adapter module, found the way a network finds its
    targets, on sd-scripts' own module tree (SD1 stands for SD1/SD2: their blocks are laid out alike)."""
    from lr_weights.models.reference import build_reference_model  # meta-device trees: only the CLI asks

    if arch.name == "flux":
        _, flux = build_reference_model("flux")
        return frozenset(t.block for t in flux_block_targets(flux, arch, arch.unet_target_classes) if t.block >= 0)
    _, unet = build_reference_model("sdxl" if arch.is_sdxl else "sd1")
    return frozenset(t.block for t in unet_targets(unet, arch, include_conv) if t.block >= 0)
