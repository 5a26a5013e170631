"""The values of lycoris.kohya's own network_args, checked before lycoris-lora reads them.

lycoris-lora converts them deep inside (`int(factor)` raises "invalid literal for int()" without
naming the arg) or not at all (its flags are on for any text but "false", so `use_tucker=maybe` or
`use_tucker=0` silently meant on). Values are only checked here, never rewritten, so what is
accepted reaches lycoris-lora exactly as given and trains exactly as with `lycoris.kohya`.
"""

from __future__ import annotations

from typing import Any, Mapping

from lr_weights.args.scalars import parse_float, parse_int
from lr_weights.errors import NetworkArgError

# The flags lycoris.kohya reads with its str_bool (on unless the text is "false") or as given.
FLAG_ARGS = (
    "use_tucker", "use_cp", "use_conv_cp", "disable_conv_cp", "use_scalar", "train_norm", "rescaled", "dora_wd",
    "wd_on_output", "full_matrix", "bypass_mode", "rs_lora", "unbalanced_factorization", "decompose_both",
)
# Whole numbers: LoKr's factor (-1 = as large as it goes), DyLoRA's block_size (default 4).
INT_ARGS = {"factor": None, "block_size": 1}
FLOAT_ARGS = ("constraint", "constrain")


def check_lycoris_values(args: Mapping[str, Any]) -> None:
    """Refuse a LyCORIS arg value that lycoris-lora would crash on or misread, naming arg and value."""
    for key, value in args.items():
        if value is None:
            continue
        if key in FLAG_ARGS:
            _check_flag(key, value)
        elif key in INT_ARGS:
            parse_int(key, value, minimum=INT_ARGS[key])
        elif key in FLOAT_ARGS:
            parse_float(key, str(value).strip())


def _check_flag(key: str, value: Any) -> None:
    # Only the two words lycoris-lora tells apart: any other text (even 0 or no) it reads as on.
    if isinstance(value, bool) or str(value).strip().lower() in ("true", "false"):
        return
    raise NetworkArgError(key, value, "True or False (lycoris-lora reads any other text, even 0 or no, as True)")
