"""What an architecture is, as data: its blocks, the network_args that address them, its LBW words.

One frozen `Architecture` per model family (archs/sd.py, sdxl.py, flux.py). Everything that parses
block specs, thresholds, block dims, optimizer groups, the per-block table and LBW vectors takes one
of these and reads nothing else about the model, so a new family is one new file here (plus a
recorded skeleton for `lr-weights plan`).

Vocabulary:
- block: one entry of the flat per-block list sd-scripts-style code indexes (SD 25, SDXL 23,
  FLUX 59). Some blocks exist only to keep upstream's numbering and never hold a module
  (`moduleless`).
- stack: a run of consecutive blocks that one LR-weight arg addresses (`down_lr_weight` -> IN00..IN11;
  `single_lr_weight` -> S00..S37). Optionally a stack has its own dims/alphas args
  (`single_block_dims`); SD instead has whole-model lists (`block_dims`, 25 values).
- LBW vocabulary: the comma vectors LoRA Block Weight (and ComfyUI's Inspire pack) use for this
  family: each form is a tuple of entry names; an entry scales blocks (by block name) or text
  encoders (by label, e.g. "TE" or "TE1").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from lr_weights.archs.dit import DiTLayout
from lr_weights.archs.signatures import ModelSignature


@dataclass(frozen=True)
class Stack:
    """Consecutive blocks addressed by one LR-weight network arg."""

    name: str  # "down", "mid", "up", "double", "single"
    lr_weight_key: str  # the network arg, e.g. "down_lr_weight"
    start: int  # flat index of its first block
    size: int
    presets: bool = True  # whether sine/cosine/linear/reverse_linear/zeros[+b] and one number are accepted
    # Upstream's rule for SD's down/mid/up lists: a short list is padded with 1.0 and a long one cut,
    # each with a warning. An arg upstream does not have takes exactly `size` values (else an error).
    pads_or_cuts: bool = False
    dims_key: Optional[str] = None  # per-stack dims arg (FLUX: double_block_dims), if any
    alphas_key: Optional[str] = None

    @property
    def stop(self) -> int:
        return self.start + self.size

    def __contains__(self, index: int) -> bool:
        return self.start <= index < self.stop


def stack_keys(stacks: Tuple[Stack, ...]) -> Tuple[str, ...]:
    """The network args of some stacks: their LR weights, then their dims and alphas args."""
    keys = tuple(stack.lr_weight_key for stack in stacks)
    return keys + tuple(key for stack in stacks for key in (stack.dims_key, stack.alphas_key) if key is not None)


@dataclass(frozen=True)
class LBWVocabulary:
    """The LBW vectors of one architecture, as the WebUI extension / Inspire pack spell them."""

    forms: Tuple[Tuple[str, ...], ...]  # each: entry names in vector order; lengths differ
    presets: Tuple[Tuple[str, str], ...]  # (name, vector text)
    preset_form: Tuple[str, ...]  # the entry names the preset vectors are written in
    # entry -> what it scales: block names and/or text-encoder labels. Entries not listed scale
    # the block of the same name.
    entry_targets: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()
    text_encoder_labels: Tuple[str, ...] = ("TE",)  # labels an entry may target besides blocks
    # How the per-block table names each encoder's row (label -> name); unlisted labels as they are.
    text_encoder_rows: Tuple[Tuple[str, str], ...] = (("TE1", "CLIP"), ("TE3", "T5"))

    @property
    def lengths(self) -> Tuple[int, ...]:
        return tuple(len(form) for form in self.forms)

    def form(self, length: int) -> Optional[Tuple[str, ...]]:
        for form in self.forms:
            if len(form) == length:
                return form
        return None

    def targets(self, entry: str) -> Tuple[str, ...]:
        return dict(self.entry_targets).get(entry, (entry,))

    def preset(self, name: str) -> Optional[str]:
        """The canonical preset name for `name` (case-insensitive), or None."""
        for preset, _ in self.presets:
            if preset.upper() == name.upper():
                return preset
        return None

    @property
    def preset_vectors(self) -> Dict[str, str]:
        return dict(self.presets)


@dataclass(frozen=True)
class Architecture:
    """The block layout of one model family, as sd-scripts numbers it, and how its names map to it."""

    name: str  # "sd", "sdxl", "flux": the --arch value and the key in ARCHITECTURES
    title: str  # for messages: "SD1.x/SD2.x"
    block_names: Tuple[str, ...]  # one per flat block index
    stacks: Tuple[Stack, ...]
    # Indices the flat list carries (upstream's numbering) that never hold a LoRA module.
    moduleless: Tuple[int, ...]
    lbw: LBWVocabulary
    locate: Callable[[str], int]  # lora_name -> flat block index, -1 when the name is in no block
    # Whole-model per-block lists (SD: block_dims, ...; one value per flat block), if any.
    block_list_keys: Tuple[str, ...] = ()
    # The network args only this family's entry point reads; other entry points refuse them.
    own_keys: Tuple[str, ...] = ()
    unet_prefix: str = "lora_unet"
    # lora-name prefix of each text encoder -> its label in tables and LBW ("lora_te1_" -> "TE1").
    text_encoder_prefixes: Tuple[Tuple[str, str], ...] = (("lora_te_", "TE"),)
    # The names other trainers (diffusers, PEFT, ai-toolkit) give the same modules in the files
    # they share: denoiser prefixes, and text-encoder prefix -> label. Read by inspect and bake.
    foreign_unet_prefixes: Tuple[str, ...] = ()
    foreign_text_encoder_prefixes: Tuple[Tuple[str, str], ...] = ()
    # Files whose module names match `foreign_name_pattern` are renamed on load by
    # `rename_foreign` (name -> ours, None when it has no counterpart); SDXL: diffusers' U-Net.
    foreign_name_pattern: Optional[str] = None
    rename_foreign: Optional[Callable[[str], Optional[str]]] = None
    # Class names whose Linear/Conv2d children get adapters (U-Net kind: conv classes with LoCon).
    unet_target_classes: Tuple[str, ...] = ()
    unet_conv_target_classes: Tuple[str, ...] = ()
    text_encoder_target_classes: Tuple[str, ...] = ()
    # Classes that count as text-encoder targets too (regex, full match): newer transformers add
    # attention classes with the same role (CLIPSdpaAttention, CLIPFlashAttention2).
    text_encoder_class_pattern: Optional[str] = None
    entry_point: str = "lr_weights.lora"
    # sd-scripts' training script for the family (a TOML that names it is planned for this arch),
    # and upstream's network module for it (planned as entry_point).
    training_script: str = "train_network.py"
    upstream_module: str = "networks.lora"
    # The DiT kind's layout (archs/dit.py); None for the U-Net kind (SD, SDXL).
    dit: Optional[DiTLayout] = None
    # Its models (SD: sd1, sd2): skeletons and how each is detected (archs/signatures.py).
    models: Tuple[ModelSignature, ...] = ()

    @property
    def kind(self) -> str:
        """"dit" (stacks of transformer blocks, lora_flux's pattern) or "unet" (sd-scripts' lora.py)."""
        return "unet" if self.dit is None else "dit"

    def is_text_encoder_target_class(self, class_name: str) -> bool:
        if class_name in self.text_encoder_target_classes:
            return True
        return self.text_encoder_class_pattern is not None and re.fullmatch(self.text_encoder_class_pattern, class_name) is not None

    # ---- blocks ------------------------------------------------------------------------------

    @property
    def num_blocks(self) -> int:
        return len(self.block_names)

    def block_name(self, index: int) -> str:
        if 0 <= index < self.num_blocks:
            return self.block_names[index]
        return "?"

    def block_index_of(self, name: str) -> int:
        """Flat index of a block name (IN04, D03, S12), or -1."""
        try:
            return self.block_names.index(name)
        except ValueError:
            return -1

    def stack(self, name: str) -> Stack:
        for stack in self.stacks:
            if stack.name == name:
                return stack
        raise KeyError(f"{self.name} has no {name} stack")

    def stack_of(self, index: int) -> Optional[Stack]:
        for stack in self.stacks:
            if index in stack:
                return stack
        return None

    def part_of(self, index: int) -> Tuple[str, int]:
        """(stack name | 'fixed', position within that stack) for a flat block index."""
        stack = self.stack_of(index)
        if stack is None:
            return "fixed", 0
        return stack.name, index - stack.start

    def trained_blocks(self) -> Tuple[int, ...]:
        """Blocks that hold modules and that an LR-weight arg addresses (not SDXL EMB, FLUX IN/OUT)."""
        return tuple(i for stack in self.stacks for i in range(stack.start, stack.stop) if i not in self.moduleless)

    @property
    def lr_weight_keys(self) -> Tuple[str, ...]:
        return tuple(stack.lr_weight_key for stack in self.stacks)

    def text_encoder_label(self, lora_name: str) -> str:
        for prefix, label in self.text_encoder_prefixes + self.foreign_text_encoder_prefixes:
            if lora_name.startswith(prefix):
                return label
        return "TE"

    def encoder_prefixes(self, count: int) -> Tuple[str, ...]:
        """The LoRA prefixes of `count` text encoders as a host passes them: the DiT kind's in its
        list's order; the U-Net kind's as sd-scripts' lora.py names them (`lora_te` for one,
        `lora_te1`, `lora_te2` for two)."""
        if self.dit is not None:
            return tuple(e.prefix for e in self.dit.text_encoders[:count])
        by_label = {label: prefix.rstrip("_") for prefix, label in self.text_encoder_prefixes}
        return (by_label["TE"],) if count == 1 else tuple(by_label[f"TE{i + 1}"] for i in range(count))

    def is_denoiser_name(self, lora_name: str) -> bool:
        """Whether a module name is of the U-Net / flow model (else of a text encoder)."""
        return lora_name.startswith((self.unet_prefix,) + self.foreign_unet_prefixes)

    # ---- SD's down/mid/up names, kept for the code written for SD and SDXL ---------------------

    @property
    def num_down(self) -> int:
        return self.stack("down").size

    @property
    def num_mid(self) -> int:
        return self.stack("mid").size

    @property
    def down_start(self) -> int:
        return self.stack("down").start

    @property
    def mid_start(self) -> int:
        return self.stack("mid").start

    @property
    def up_start(self) -> int:
        return self.stack("up").start

    @property
    def is_sdxl(self) -> bool:
        return self.name == "sdxl"
