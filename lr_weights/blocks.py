"""U-Net block numbering: which block a LoRA module belongs to, and what each block is called.

sd-scripts numbers the blocks of an SD1.x/SD2.x U-Net 0..24 (IN00..IN11, M00, OUT00..OUT11, the
LDM layout) and the blocks of its own SDXL U-Net 0..22 (time embedding, 9 input blocks, 3 middle
blocks, 9 output blocks, out). Everything here is a pure function of names, so it works on models
whose weights live on the `meta` device and never imports sd-scripts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Tuple

if TYPE_CHECKING:  # the CLI's --help imports this module and must not pay for torch
    import torch

LORA_PREFIX_UNET = "lora_unet"
LORA_PREFIX_TEXT_ENCODER = "lora_te"
LORA_PREFIX_TEXT_ENCODER1 = "lora_te1"
LORA_PREFIX_TEXT_ENCODER2 = "lora_te2"


@dataclass(frozen=True)
class Architecture:
    """The block layout of one U-Net family, as sd-scripts numbers it."""

    name: str  # "sd" (SD1.x/SD2.x) or "sdxl"
    num_down: int  # entries of down_lr_weight / up_lr_weight
    num_mid: int  # entries of mid_lr_weight
    block_names: Tuple[str, ...]  # one per block index
    # Indices that sd-scripts' flat weight list carries but that never hold a LoRA module.
    moduleless: Tuple[int, ...]
    # Where the down / mid / up parts start in the flat list of block indices.
    down_start: int

    @property
    def num_blocks(self) -> int:
        return len(self.block_names)

    @property
    def mid_start(self) -> int:
        return self.down_start + self.num_down

    @property
    def up_start(self) -> int:
        return self.mid_start + self.num_mid

    @property
    def is_sdxl(self) -> bool:
        return self.name == "sdxl"

    def block_name(self, index: int) -> str:
        if 0 <= index < self.num_blocks:
            return self.block_names[index]
        return "?"

    def part_of(self, index: int) -> Tuple[str, int]:
        """('down'|'mid'|'up'|'fixed', position within that list) for a flat block index."""
        if self.down_start <= index < self.mid_start:
            return "down", index - self.down_start
        if self.mid_start <= index < self.up_start:
            return "mid", index - self.mid_start
        if self.up_start <= index < self.up_start + self.num_down:
            return "up", index - self.up_start
        return "fixed", 0


SD = Architecture(
    name="sd",
    num_down=12,
    num_mid=1,
    block_names=tuple([f"IN{i:02d}" for i in range(12)] + ["M00"] + [f"OUT{i:02d}" for i in range(12)]),
    moduleless=(0,),  # IN00 is conv_in
    down_start=0,
)

SDXL = Architecture(
    name="sdxl",
    num_down=9,
    num_mid=3,
    # Index 0 (time/label embedding) and 22 (out) exist in sd-scripts' list but never hold a module.
    block_names=tuple(
        ["EMB"] + [f"IN{i:02d}" for i in range(9)] + [f"M{i:02d}" for i in range(3)] + [f"OUT{i:02d}" for i in range(9)] + ["FINAL"]
    ),
    moduleless=(0, 1, 22),  # input_blocks_0 is conv_in
    down_start=1,
)

ARCHITECTURES = {"sd": SD, "sdxl": SDXL}

_SD_UPDOWN = re.compile(r"(up|down)_blocks_(\d+)_(resnets|upsamplers|downsamplers|attentions)_(\d+)_")
_SDXL_PART = re.compile(r"^lora_unet_(input_blocks|middle_block|output_blocks)_(\d+)_")


def block_index(lora_name: str, arch: Architecture) -> int:
    """sd-scripts' block index of a U-Net LoRA module name, or -1 when the name has none."""
    if arch.is_sdxl:
        match = _SDXL_PART.match(lora_name)
        if match is None:
            return -1
        part, number = match.group(1), int(match.group(2))
        base = {"input_blocks": 1, "middle_block": 10, "output_blocks": 13}[part]
        return base + number

    match = _SD_UPDOWN.search(lora_name)
    if match is not None:
        direction, level, kind, position = match.group(1), int(match.group(2)), match.group(3), int(match.group(4))
        # Each level of the LDM U-Net holds three blocks; samplers always sit in the third.
        within = 2 if kind in ("upsamplers", "downsamplers") else position
        offset = 1 if direction == "down" else 13
        return offset + 3 * level + within
    if "mid_block_" in lora_name:
        return 12
    return -1


def detect_architecture(unet: "Optional[torch.nn.Module]") -> Architecture:
    """SDXL when the U-Net has sd-scripts' SDXL layout, SD1/SD2 otherwise.

    sd-scripts decides by `isinstance(unet, SdxlUNet2DConditionModel)`; importing that class would
    tie us to one sd-scripts version, so we look at the class name and the LDM-style structure.
    """
    if unet is None:
        return SD
    for cls in type(unet).__mro__:
        if cls.__name__ == "SdxlUNet2DConditionModel":
            return SDXL
    if all(hasattr(unet, part) for part in ("input_blocks", "middle_block", "output_blocks")):
        return SDXL
    return SD
