"""Kohya GUI configs of LyCORIS types -> network args for lr_weights.lycoris.

The GUI trains these with `--network_module lycoris.kohya` and one fixed string of args per type
(read from bmaltais/kohya_ss `kohya_gui/lora_gui.py`, v26.0.0 and its main branch); it never adds
its block fields (down/mid/up LR weights, block dims ...) for them, so they were silently unused.
Here the type's own args come first, as the GUI writes them, then the block fields that are set,
for lr_weights.lycoris to honour. A field missing from a file takes the GUI's default.
"""

from __future__ import annotations

from typing import Any, Callable, List, Mapping, Tuple

# LoRA_type -> (algo, the GUI fields it passes, in the GUI's order). "constraint" reads the GUI's
# "constrain" field, "block_size" its "unit" field.
_LOCON_FIELDS = ("preset", "conv_dim", "conv_alpha", "use_tucker", "rank_dropout", "bypass_mode", "dora_wd", "module_dropout", "use_scalar", "rank_dropout_scale")
LYCORIS_GUI_TYPES = {
    "LyCORIS/BOFT": ("boft", ("preset", "conv_dim", "conv_alpha", "module_dropout", "use_tucker", "rank_dropout", "rank_dropout_scale")),
    "LyCORIS/Diag-OFT": ("diag-oft", ("preset", "conv_dim", "conv_alpha", "module_dropout", "use_tucker", "rank_dropout", "rank_dropout_scale", "constraint", "rescaled")),
    "LyCORIS/DyLoRA": ("dylora", ("preset", "conv_dim", "conv_alpha", "use_tucker", "block_size", "rank_dropout", "module_dropout")),
    "LyCORIS/GLoRA": ("glora", ("preset", "conv_dim", "conv_alpha", "use_tucker", "rank_dropout", "module_dropout", "rank_dropout_scale")),
    "LyCORIS/iA3": ("ia3", ("preset", "conv_dim", "conv_alpha", "train_on_input")),
    "LoCon": ("locon", _LOCON_FIELDS),
    "LyCORIS/LoCon": ("locon", _LOCON_FIELDS),
    "LyCORIS/LoHa": ("loha", _LOCON_FIELDS),
    "LyCORIS/LoKr": ("lokr", ("preset", "conv_dim", "conv_alpha", "use_tucker", "rank_dropout", "bypass_mode", "dora_wd", "module_dropout", "factor", "use_cp", "use_scalar", "decompose_both", "rank_dropout_scale")),
    "LyCORIS/Native Fine-Tuning": ("full", ("preset", "rank_dropout", "module_dropout", "rank_dropout_scale")),
}
_GUI_FIELD = {"preset": "LyCORIS_preset", "constraint": "constrain", "block_size": "unit"}
# The GUI's defaults for the fields above (its gr components' initial values).
_DEFAULTS = {
    "LyCORIS_preset": "full", "conv_dim": 1, "conv_alpha": 1, "unit": 1, "factor": -1, "constrain": 0.0, "rank_dropout": 0, "module_dropout": 0,
    "use_tucker": False, "use_cp": False, "use_scalar": False, "bypass_mode": False, "dora_wd": False, "decompose_both": False,
    "rank_dropout_scale": False, "rescaled": False, "train_on_input": True, "train_norm": False,
}
BLOCK_FIELDS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold", "block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas")
_OLD_NAMES = {"conv_block_dims": "conv_dims", "conv_block_alphas": "conv_alphas"}


def lycoris_gui_network_args(config: Mapping[str, Any], lora_type: str, clean: Callable[[str, Any], str], truthy: Callable[[Any], bool]) -> List[Tuple[str, str]]:
    """[(key, value), ...] for lr_weights.lycoris: the type's LyCORIS args, then the set block fields."""
    algo, fields = LYCORIS_GUI_TYPES[lora_type]
    pairs: List[Tuple[str, str]] = []
    for key in fields:
        gui_key = _GUI_FIELD.get(key, key)
        value = config.get(gui_key, _DEFAULTS.get(gui_key, ""))
        if value is None or value == "":
            value = _DEFAULTS.get(gui_key, "")
        pairs.append((key, clean(key, value)))
    pairs.append(("algo", algo))
    if algo != "ia3":
        pairs.append(("train_norm", clean("train_norm", config.get("train_norm", False))))
    for key in BLOCK_FIELDS:
        value = config.get(key, "")
        if not truthy(value) and key in _OLD_NAMES:
            value = config.get(_OLD_NAMES[key], "")
        if truthy(value):
            pairs.append((key, clean(key, value)))
    for key in ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio"):
        if truthy(config.get(key, "")):
            pairs.append((key, clean(key, config[key])))
    return pairs


def block_args_only(args: Mapping[str, str]) -> dict:
    """The args lr_weights' own parser reads (block args, dropouts, conv dims), without the
    LyCORIS-only ones, so a converted config can be checked without lycoris-lora installed."""
    from lr_weights.adapters.lycoris_library import KNOWN_LYCORIS_ARGS
    from lr_weights.args.keys import KNOWN_KEYS

    lycoris_only = (set(KNOWN_LYCORIS_ARGS) | {"rank_dropout_scale", "train_on_input"}) - set(KNOWN_KEYS)
    return {k: v for k, v in args.items() if k not in lycoris_only}
