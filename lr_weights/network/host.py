"""What the calling sd-scripts trainer understands, found without importing sd-scripts.

`prepare_optimizer_params` must return `(params, descriptions)` to trainers that read LR
descriptions (sd-scripts v0.9.0 and newer) and a plain list to older ones, which hand the return
value straight to the optimizer (a tuple fails there with "optimizer can only optimize Tensors").
Newer trainers keep the descriptions in a local variable called `lr_descriptions`; older ones have
none. Callers that are not sd-scripts trainers get the newest behaviour, the tuple.
"""

from __future__ import annotations

import os
from types import FrameType
from typing import Optional

# Entry scripts of sd-scripts that drive network modules through NetworkTrainer.train().
_TRAINER_FILES = ("train_network.py", "sdxl_train_network.py", "train_textual_inversion.py")


def caller_reads_descriptions(frame: Optional[FrameType]) -> bool:
    """True when the function in `frame` expects `(params, descriptions)`."""
    if frame is None:
        return True
    code = frame.f_code
    if "lr_descriptions" in code.co_varnames or "lr_descriptions" in code.co_names:
        return True
    return os.path.basename(code.co_filename) not in _TRAINER_FILES
