"""SDXL's diffusers U-Net names -> sd-scripts' LDM names (SDXL LoRAs trained by diffusers scripts).

A pure function of names, read by the SDXL architecture (`rename_foreign`) when a file is loaded.
"""

from __future__ import annotations

import re
from typing import Optional

UNET_PREFIX = "lora_unet_"
# The module names this mapping is for: diffusers' down/up/mid blocks.
DIFFUSERS_NAMES = r"^lora_unet_(down_blocks_|up_blocks_|mid_block_)"

# diffusers' ResnetBlock2D layer names -> the LDM ResBlock's (sd-scripts' SDXL U-Net).
_RESNET_LAYERS = {
    "conv1": "in_layers_2",
    "conv2": "out_layers_3",
    "time_emb_proj": "emb_layers_1",
    "conv_shortcut": "skip_connection",
}
_DIFFUSERS_UPDOWN = re.compile(r"^(down|up)_blocks_(\d+)_(resnets|attentions|downsamplers|upsamplers)_(\d+)_(.+)$")
_DIFFUSERS_MID = re.compile(r"^mid_block_(resnets|attentions)_(\d+)_(.+)$")


def sdxl_ldm_module_name(diffusers_name: str) -> Optional[str]:
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
            layer = _RESNET_LAYERS.get(tail)
            return None if layer is None else f"{UNET_PREFIX}{block}_0_{layer}"
        return f"{UNET_PREFIX}{block}_1_{tail}"
    match = _DIFFUSERS_MID.match(rest)
    if match is not None:
        kind, index, tail = match.group(1), int(match.group(2)), match.group(3)
        if kind == "attentions":
            return None if index != 0 else f"{UNET_PREFIX}middle_block_1_{tail}"
        layer = _RESNET_LAYERS.get(tail)
        return None if layer is None or index > 1 else f"{UNET_PREFIX}middle_block_{2 * index}_{layer}"
    return None
