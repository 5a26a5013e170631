"""How a model of a family shows itself, as data: in a checkpoint's keys, in a LoRA file's module
names (and shapes), in a diffusers folder, in a torch module; and which recorded skeletons rebuild it.

A family's archs/ file lists its models (SD: sd1 and sd2, which share the block layout); detection
(archs/detect.py) reads nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence, Tuple


@dataclass(frozen=True)
class Signature:
    """Names that give a model away. It matches when some name starts with one of `prefixes` or
    matches one of `patterns` (re.match), and every one of `required` starts some name; with
    `shape` (name suffix, axis, size) a LoRA module ending so whose lora_down has that size on
    that axis matches too. A signature with nothing in it matches anything (the fallback)."""

    prefixes: Tuple[str, ...] = ()
    patterns: Tuple[str, ...] = ()
    required: Tuple[str, ...] = ()
    shape: Optional[Tuple[str, int, int]] = None
    shape_prefix: str = ""  # with `shape`: the names it looks at start so (lora_unet)

    @property
    def is_empty(self) -> bool:
        return not (self.prefixes or self.patterns or self.required or self.shape)

    def matches(self, names: Sequence[str], shapes: Optional[Callable[[str], Tuple[int, ...]]] = None) -> bool:
        if self.is_empty:
            return True
        if not all(any(n.startswith(r) for n in names) for r in self.required):
            return False
        if not (self.prefixes or self.patterns or self.shape):
            return True
        if self.prefixes and any(n.startswith(self.prefixes) for n in names):
            return True
        if any(re.match(p, n) for p in self.patterns for n in names):
            return True
        return self.shape is not None and shapes is not None and self._shape_matches(names, shapes)

    def _shape_matches(self, names: Iterable[str], shapes: Callable[[str], Tuple[int, ...]]) -> bool:
        suffix, axis, size = self.shape
        for name in names:
            if name.endswith(suffix) and name.startswith(self.shape_prefix):
                return shapes(name)[axis] == size
        return False


@dataclass(frozen=True)
class ModelSignature:
    """One model of a family: its name (`--arch`, `--model`), skeletons and signatures.

    `rank` orders detection: a model whose names contain another's (FLUX's CLIP-L is SDXL's
    `lora_te1_`) ranks higher, so it is tried first; the fallback of a family ranks lowest.
    """

    name: str  # "sd1"
    skeletons: Tuple[str, ...]  # models/data/<name>.json: the text encoders, then the denoiser
    checkpoint: Signature  # keys of a single-file checkpoint
    lora: Signature  # module names of a LoRA file
    rank: int = 0
    # A diffusers folder: subfolders it has, and unet/config.json entries it holds (None: this
    # model is not read from diffusers folders).
    diffusers_folders: Optional[Tuple[str, ...]] = None
    diffusers_unet_config: Tuple[Tuple[str, object], ...] = ()
    # A torch module of the denoiser: a class in its MRO, or every one of these attributes.
    module_classes: Tuple[str, ...] = ()
    module_attributes: Tuple[str, ...] = ()

    @property
    def text_encoder_skeletons(self) -> Tuple[str, ...]:
        return self.skeletons[:-1]

    @property
    def denoiser_skeleton(self) -> str:
        return self.skeletons[-1]
