"""Kohya GUI (bmaltais/kohya_ss) LoRA configs -> the sd-scripts settings that run them with lr_weights.

How the GUI builds `--network_args`, read from its `lora_gui.py` at v21.7.7, v21.8.4, v24.0.0 and
v26.0.0 (the same rule in every era, unless noted):
- "Standard" and "Kohya LoCon" -> `networks.lora`; "Kohya DyLoRA" -> `networks.dylora`.
- "Kohya LoCon" first adds `conv_dim` and `conv_alpha` unconditionally (v24.0.0-v24.0.3 forgot
  them, so a LoCon trained as a plain LoRA there; we add them, as every other version does).
- Then each of these fields whose value is truthy ("" and 0 are left out), in this order (the order
  of train_model's parameters): conv_dim, conv_alpha (DyLoRA only), down_lr_weight, mid_lr_weight,
  up_lr_weight, block_lr_zero_threshold, block_dims, block_alphas, conv_block_dims (v21.7.x:
  conv_dims), conv_block_alphas (v21.7.x: conv_alphas), unit (DyLoRA only), rank_dropout,
  module_dropout; v26 then appends loraplus_lr_ratio, loraplus_unet_lr_ratio,
  loraplus_text_encoder_lr_ratio.
- v21.x puts them on the command line as `key="value"`; v24+ writes a TOML whose network_args is
  `network_args.replace('"', '').split()`, so a value with a space ("1, 1, 1") is cut into
  pieces without `=` and sd-scripts crashes. v21.7.x's conv_dims/conv_alphas were never read by
  sd-scripts. We strip the spaces and use the conv_block_* names.
- LyCORIS types go to `lycoris.kohya`, which has no block LRs; they convert to
  `lr_weights.lycoris` with their block fields (lr_weights/cli/gui_lycoris.py).
- v26's DiT types (lora_gui.py train_model): "Flux1" -> `networks.lora_flux` with img_attn_dim,
  img_mlp_dim, img_mod_dim, single_dim, txt_attn_dim, txt_mlp_dim, txt_mod_dim, single_mod_dim,
  in_dims, train_double_block_indices, train_single_block_indices (truthy ones, in that order),
  ggpo_beta / ggpo_sigma when train_lora_ggpo, train_blocks=single when split_mode, split_qkv=True,
  train_t5xxl=True (with flux1_checkbox); "Anima" -> `networks.lora_anima`, "HunyuanImage-2.1"
  -> `networks.lora_hunyuan_image` and "Lumina" -> `networks.lora_lumina` with nothing of their
  own. All of them then get the LoRA+ ratios. v26.0.0 passes no rank_dropout / module_dropout for
  them (L1664-1740); the GUI after it does, when > 0 (b1cce441, #3581), and so do we, with a note.
  SD3 is "Standard"
  or "Kohya LoCon" with the SD3 checkbox: `networks.lora_sd3` with those types' args
  (lr_weights/cli/gui_families.py). The GUI shows its SD-shaped block panel (down/mid/up_lr_weight,
  block_dims, ...) for all of these and drops what is typed there (for SD3 it passes it to
  lora_sd3, which never reads it); we leave it out, say so in a note and point to the family's own
  args. Each trains with its family's script (flux_train_network.py, anima_train_network.py,
  hunyuan_image_train_network.py, lumina_train_network.py, sd3_train_network.py); each family's
  panel (model files, flow, caching, offload settings) is carried into the TOML as train_model
  writes it, less what the training script has no option for (gui_families.py).
A key missing from a file takes the GUI's default (LoRA_type Standard, network_dim 8,
network_alpha 1, conv_dim 1, conv_alpha 1, unit 1; block fields "").
"""

from __future__ import annotations

import logging
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Tuple

from lr_weights.archs.blocks import Architecture
from lr_weights.cli.gui_families import DIT_TYPES, Panel, gui_architecture, left_out_by_gui, panel_of, trains_unet_only
from lr_weights.errors import NetworkArgError
from lr_weights.args.lbw import format_number

logger = logging.getLogger(__name__)

BLOCK_LR_TYPES = {"Standard": "lr_weights.lora", "Kohya LoCon": "lr_weights.lora", "Kohya DyLoRA": "lr_weights.dylora"}
GUI_DEFAULTS: Mapping[str, Any] = {"LoRA_type": "Standard", "network_dim": 8, "network_alpha": 1, "conv_dim": 1, "conv_alpha": 1, "unit": 1}
NETWORK_ARG_ORDER = (
    "conv_dim",
    "conv_alpha",
    "down_lr_weight",
    "mid_lr_weight",
    "up_lr_weight",
    "block_lr_zero_threshold",
    "block_dims",
    "block_alphas",
    "conv_block_dims",
    "conv_block_alphas",
    "unit",
    "rank_dropout",
    "module_dropout",
)
LORAPLUS_KEYS = ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio")
_DYLORA_ONLY = ("conv_dim", "conv_alpha", "unit")
_GUI_ALIASES = {"conv_block_dims": "conv_dims", "conv_block_alphas": "conv_alphas"}
_INT_KEYS = ("conv_dim", "unit", "network_dim")
FLUX1_GUI_KEYS = (
    "img_attn_dim",
    "img_mlp_dim",
    "img_mod_dim",
    "single_dim",
    "txt_attn_dim",
    "txt_mlp_dim",
    "txt_mod_dim",
    "single_mod_dim",
    "in_dims",
    "train_double_block_indices",
    "train_single_block_indices",
)
# The GUI's SD-shaped block panel, shown for the DiT types too and dropped there.
SD_BLOCK_PANEL = ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold", "block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas")


@dataclass
class SdScriptsConfig:
    """What runs a GUI config with lr_weights: the flat --config_file table and the launch command parts."""

    lora_type: str
    arch: Architecture
    script: str  # train_network.py or sdxl_train_network.py
    table: Dict[str, Any]  # sd-scripts option -> value, in a stable order
    network_args: List[Tuple[str, str]]
    accelerate_args: List[str]
    additional_parameters: List[str]
    notes: List[str] = field(default_factory=list)

    @property
    def network_module(self) -> str:
        return self.table["network_module"]


def gui_value(config: Mapping[str, Any], key: str) -> Any:
    if key in config:
        return config[key]
    return GUI_DEFAULTS.get(key, "")


def _clean(key: str, value: Any) -> str:
    """The text sd-scripts should receive: no spaces (v24+ GUIs split there), whole numbers for dims."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        if key in _INT_KEYS and float(value).is_integer():
            return str(int(value))
        return format_number(value)
    return re.sub(r"\s+", "", str(value)).replace('"', "")


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip() != ""
    return bool(value)


def gui_network_args(config: Mapping[str, Any], source: str = "config") -> Tuple[str, List[Tuple[str, str]]]:
    """(network module, [(key, value), ...]) the GUI would build, with lr_weights' module."""
    lora_type = str(gui_value(config, "LoRA_type"))
    return _network_args(config, lora_type, gui_architecture(config, lora_type, source), source)


def _network_args(config: Mapping[str, Any], lora_type: str, arch: Architecture, source: str) -> Tuple[str, List[Tuple[str, str]]]:
    from lr_weights.cli.gui_lycoris import LYCORIS_GUI_TYPES, lycoris_gui_network_args

    if lora_type in LYCORIS_GUI_TYPES:
        return "lr_weights.lycoris", lycoris_gui_network_args(config, lora_type, _clean, _truthy)
    if lora_type in DIT_TYPES:
        return arch.entry_point, _dit_network_args(config, lora_type)
    if lora_type not in BLOCK_LR_TYPES:
        raise ValueError(
            f"{source}: LoRA_type {lora_type!r} has no lr_weights module; block LRs need LoRA_type Standard, Kohya LoCon "
            f"(with sd3_checkbox for SD3), Kohya DyLoRA, {', '.join(DIT_TYPES)} or a LyCORIS type ({', '.join(sorted(LYCORIS_GUI_TYPES))}) "
            "(set it in the GUI's LoRA type, or 'LoRA_type' in the JSON)"
        )
    pairs = _block_lr_type_args(config, lora_type)
    if arch.kind == "dit":  # SD3: the GUI passes the same args to networks.lora_sd3, which never reads the SD block panel
        return arch.entry_point, [(key, value) for key, value in pairs if key not in SD_BLOCK_PANEL]
    return BLOCK_LR_TYPES[lora_type], pairs


def _block_lr_type_args(config: Mapping[str, Any], lora_type: str) -> List[Tuple[str, str]]:
    """What the GUI builds for Standard, Kohya LoCon and Kohya DyLoRA (see the module docstring)."""
    is_dylora = lora_type == "Kohya DyLoRA"
    pairs: List[Tuple[str, str]] = []
    if lora_type == "Kohya LoCon":
        pairs += [("conv_dim", _clean("conv_dim", gui_value(config, "conv_dim"))), ("conv_alpha", _clean("conv_alpha", gui_value(config, "conv_alpha")))]
    for key in NETWORK_ARG_ORDER:
        if key in _DYLORA_ONLY and not is_dylora:
            continue
        value = config.get(key, "")
        alias = _GUI_ALIASES.get(key)
        if not _truthy(value) and alias is not None and _truthy(config.get(alias, "")):
            value = config[alias]
        elif key in ("conv_dim", "conv_alpha", "unit"):
            value = gui_value(config, key)
        if _truthy(value):
            pairs.append((key, _clean(key, value)))
    for key in LORAPLUS_KEYS:
        if _truthy(config.get(key, "")):
            pairs.append((key, _clean(key, config[key])))
    return pairs


def _dit_network_args(config: Mapping[str, Any], lora_type: str) -> List[Tuple[str, str]]:
    """What v26's GUI builds for Flux1 / Anima / HunyuanImage-2.1 (see the module docstring)."""
    pairs: List[Tuple[str, str]] = []
    if lora_type == "Flux1":
        keys = FLUX1_GUI_KEYS + (("ggpo_beta", "ggpo_sigma") if config.get("train_lora_ggpo") is True else ())
        pairs += [(key, _clean(key, config[key])) for key in keys if _truthy(config.get(key, ""))]
        if config.get("split_mode") is True:
            pairs.append(("train_blocks", "single"))
        if config.get("split_qkv") is True:
            pairs.append(("split_qkv", "True"))
        if config.get("train_t5xxl") is True and config.get("flux1_checkbox") is True:
            pairs.append(("train_t5xxl", "True"))
    for key in ("rank_dropout", "module_dropout"):
        value = config.get(key, "")
        if _truthy(value) and float(value) > 0:
            pairs.append((key, _clean(key, value)))
    pairs += [(key, _clean(key, config[key])) for key in LORAPLUS_KEYS if _truthy(config.get(key, ""))]
    return pairs


def _dropped_block_panel(config: Mapping[str, Any], lora_type: str, arch: Architecture) -> List[str]:
    """A note naming the SD-shaped block fields typed in for a DiT family, which never reach it."""
    given = [f"{key}={_clean(key, config[key])}" for key in SD_BLOCK_PANEL if _truthy(config.get(key, ""))]
    if not given:
        return []
    if lora_type in DIT_TYPES:
        fate = "the GUI drops it, and so does this conversion"
    else:  # SD3 (Standard / Kohya LoCon with sd3_checkbox): the GUI passes the SD args on
        fate = f"the GUI passes it to {arch.upstream_module}, which ignores it; this conversion leaves it out"
    ours = ", ".join(arch.lr_weight_keys)
    return [
        f"the GUI's block panel has {' '.join(given)}, which {arch.title} does not read ({fate}: the down/mid/up blocks "
        f"are SD's U-Net). {arch.title}'s block weights are {ours} (and block_lr_zero_threshold); "
        f"`lr-weights show --arch {arch.name}` previews them; add them to network_args"
    ]


def _dropouts_the_gui_drops(pairs: List[Tuple[str, str]], lora_type: str) -> List[str]:
    """v26.0.0's train_model passes no rank_dropout / module_dropout for its DiT LoRA types; its main
    branch since b1cce441 (#3581) does, when > 0, and so do we."""
    given = [f"{key}={value}" for key, value in pairs if key in ("rank_dropout", "module_dropout")]
    if lora_type not in DIT_TYPES or not given:
        return []
    return [
        f"{' '.join(given)}: the GUI v26.0.0 does not pass these for LoRA_type {lora_type}; later GUIs do (kohya_ss b1cce441, "
        "after v26.0.0), and so does this conversion"
    ]


def _number(key: str, value: Any, source: str, kind=float):
    try:
        number = float(str(value).strip())
    except ValueError:
        raise NetworkArgError(key, value, f"a number (in {source})") from None
    if number != number or number in (float("inf"), float("-inf")):  # int() of these is an OverflowError
        raise NetworkArgError(key, value, f"a finite number (in {source})")
    return int(number) if kind is int else number


# GUI field -> sd-scripts option, and how to carry it over. Kinds: str (non-empty), bool (True),
# num (always), pos (> 0), nonzero (!= 0), int / intpos (whole numbers), args (whitespace-separated list).
_OPTIONS: Tuple[Tuple[str, str, str], ...] = (
    ("pretrained_model_name_or_path", "pretrained_model_name_or_path", "str"),
    ("v2", "v2", "bool"),
    ("v_parameterization", "v_parameterization", "bool"),
    ("vae", "vae", "str"),
    ("train_data_dir", "train_data_dir", "str"),
    ("reg_data_dir", "reg_data_dir", "str"),
    ("dataset_config", "dataset_config", "str"),
    ("output_dir", "output_dir", "str"),
    ("output_name", "output_name", "str"),
    ("logging_dir", "logging_dir", "str"),
    ("max_resolution", "resolution", "str"),
    ("train_batch_size", "train_batch_size", "intpos"),
    ("gradient_accumulation_steps", "gradient_accumulation_steps", "intpos"),
    ("lr_scheduler", "lr_scheduler", "str"),
    ("lr_warmup_steps", "lr_warmup_steps", "intpos"),
    ("lr_scheduler_num_cycles", "lr_scheduler_num_cycles", "intpos"),
    ("lr_scheduler_power", "lr_scheduler_power", "pos"),
    ("lr_scheduler_args", "lr_scheduler_args", "args"),
    ("optimizer", "optimizer_type", "str"),
    ("optimizer_args", "optimizer_args", "args"),
    ("max_grad_norm", "max_grad_norm", "num"),
    ("mixed_precision", "mixed_precision", "str"),
    ("save_precision", "save_precision", "str"),
    ("full_fp16", "full_fp16", "bool"),
    ("full_bf16", "full_bf16", "bool"),
    ("fp8_base", "fp8_base", "bool"),
    ("seed", "seed", "intpos"),
    ("cache_latents", "cache_latents", "bool"),
    ("cache_latents_to_disk", "cache_latents_to_disk", "bool"),
    ("caption_extension", "caption_extension", "str"),
    ("enable_bucket", "enable_bucket", "bool"),
    ("min_bucket_reso", "min_bucket_reso", "intpos"),
    ("max_bucket_reso", "max_bucket_reso", "intpos"),
    ("bucket_reso_steps", "bucket_reso_steps", "intpos"),
    ("bucket_no_upscale", "bucket_no_upscale", "bool"),
    ("gradient_checkpointing", "gradient_checkpointing", "bool"),
    ("mem_eff_attn", "mem_eff_attn", "bool"),
    ("no_token_padding", "no_token_padding", "bool"),
    ("shuffle_caption", "shuffle_caption", "bool"),
    ("keep_tokens", "keep_tokens", "intpos"),
    ("weighted_captions", "weighted_captions", "bool"),
    ("caption_dropout_every_n_epochs", "caption_dropout_every_n_epochs", "intpos"),
    ("caption_dropout_rate", "caption_dropout_rate", "pos"),
    ("caption_tag_dropout_rate", "caption_tag_dropout_rate", "pos"),
    ("color_aug", "color_aug", "bool"),
    ("flip_aug", "flip_aug", "bool"),
    ("random_crop", "random_crop", "bool"),
    ("max_data_loader_n_workers", "max_data_loader_n_workers", "int"),
    ("persistent_data_loader_workers", "persistent_data_loader_workers", "bool"),
    ("vae_batch_size", "vae_batch_size", "intpos"),
    ("prior_loss_weight", "prior_loss_weight", "num"),
    ("min_snr_gamma", "min_snr_gamma", "pos"),
    ("scale_weight_norms", "scale_weight_norms", "pos"),
    ("network_dropout", "network_dropout", "pos"),
    ("scale_v_pred_loss_like_noise_pred", "scale_v_pred_loss_like_noise_pred", "bool"),
    ("v_pred_like_loss", "v_pred_like_loss", "pos"),
    ("debiased_estimation_loss", "debiased_estimation_loss", "bool"),
    ("ip_noise_gamma", "ip_noise_gamma", "pos"),
    ("min_timestep", "min_timestep", "intpos"),
    ("save_model_as", "save_model_as", "str"),
    ("save_every_n_epochs", "save_every_n_epochs", "intpos"),
    ("save_every_n_steps", "save_every_n_steps", "intpos"),
    ("save_last_n_steps", "save_last_n_steps", "intpos"),
    ("save_last_n_steps_state", "save_last_n_steps_state", "intpos"),
    ("save_state", "save_state", "bool"),
    ("resume", "resume", "str"),
    ("lora_network_weights", "network_weights", "str"),
    ("dim_from_weights", "dim_from_weights", "bool"),
    ("training_comment", "training_comment", "str"),
    ("metadata_author", "metadata_author", "str"),
    ("metadata_description", "metadata_description", "str"),
    ("metadata_license", "metadata_license", "str"),
    ("metadata_tags", "metadata_tags", "str"),
    ("metadata_title", "metadata_title", "str"),
)


def _carry(table: Dict[str, Any], config: Mapping[str, Any], gui_key: str, option: str, kind: str, source: str) -> None:
    if gui_key not in config:
        return
    value = config[gui_key]
    if kind == "str":
        if isinstance(value, str) and value.strip() and not (gui_key == "save_model_as" and value == "same as source model"):
            table[option] = value
    elif kind == "bool":
        if value is True or (isinstance(value, str) and value.lower() == "true"):
            table[option] = True
    elif kind == "args":
        parts = str(value).replace('"', "").split()
        if parts:
            table[option] = parts
    elif isinstance(value, str) and value.strip() == "":
        return
    elif kind in ("int", "intpos"):
        number = _number(gui_key, value, source, int)
        if kind == "int" or number > 0:
            table[option] = number
    else:
        number = _number(gui_key, value, source)
        if kind == "num" or number > 0 or (kind == "nonzero" and number != 0):
            table[option] = number


# Settings that every Kohya GUI era (v21.7 .. v26) writes into a LoRA config; a JSON file with
# fewer than two of them (a package.json, a dataset config) is something else.
GUI_MARKER_KEYS = ("LoRA_type", "pretrained_model_name_or_path", "network_dim", "learning_rate", "train_data_dir", "output_dir", "optimizer", "lr_scheduler")


def gui_to_sd_scripts(config: Mapping[str, Any], source: str = "config", sd_scripts_dir: str = "") -> SdScriptsConfig:
    """The sd-scripts settings that run `config` with lr_weights (network args not yet validated)."""
    _check_is_gui_config(config, source)
    lora_type = str(gui_value(config, "LoRA_type"))
    arch = gui_architecture(config, lora_type, source)
    module, pairs = _network_args(config, lora_type, arch, source)
    notes: List[str] = _dropped_block_panel(config, lora_type, arch) if arch.kind == "dit" else []
    notes += _dropouts_the_gui_drops(pairs, lora_type)
    table: Dict[str, Any] = {}
    for gui_key, option, kind in _OPTIONS:
        if not left_out_by_gui(option, arch):
            _carry(table, config, gui_key, option, kind, source)
    panel = panel_of(arch)
    if panel is not None:
        notes += _carry_panel(table, config, panel, arch, lora_type, source)
    notes += _training_options(table, config, source, arch)
    panel_written = panel is not None and config.get(panel.checkbox) is True
    _learning_rates(table, config, source, unet_only=panel_written and trains_unet_only(arch))
    _network_options(table, config, module, pairs, source)

    accelerate = [f"--num_cpu_threads_per_process={_number('num_cpu_threads_per_process', config.get('num_cpu_threads_per_process', 2), source, int)}"]
    if "mixed_precision" in table:
        accelerate.append(f"--mixed_precision={table['mixed_precision']}")
    script = arch.training_script
    if sd_scripts_dir:
        script = sd_scripts_dir.rstrip("/\\") + "/" + script
    try:
        additional = shlex.split(str(config.get("additional_parameters", "") or ""))
    except ValueError as error:
        raise ValueError(f"{source}: additional_parameters cannot be split into arguments ({error})") from None
    overriding = overridden_settings(additional, table)
    if overriding:
        notes.append(f"additional_parameters sets {', '.join(overriding)}, which overrides the converted setting")
    return SdScriptsConfig(lora_type, arch, script, table, pairs, accelerate, additional, notes)


def _carry_panel(table: Dict[str, Any], config: Mapping[str, Any], panel: Panel, arch: Architecture, lora_type: str, source: str) -> List[str]:
    """The family panel's fields as train_model writes them (gui_families.Panel); returns notes."""
    if config.get(panel.checkbox) is not True:
        return [
            f"LoRA_type {lora_type} without {panel.checkbox}: the GUI then runs train_network.py and writes none of {arch.title}'s "
            f"panel (model files, flow and caching settings); this conversion runs {arch.training_script} and carries none of it "
            f"either: check the {arch.title} model checkbox in the GUI and save the config again, or add them to the TOML"
        ]
    both = [key for key in panel.exclusive if config.get(key) is True]
    if len(both) > 1:
        raise ValueError(f"{source}: {' and '.join(f'{key}=true' for key in both)}: the GUI refuses these together; keep one")
    written: Dict[str, Any] = {}
    for field in panel.fields:
        if (field.when and not _truthy(config.get(field.when, ""))) or (field.unless and config.get(field.gui) == field.unless):
            continue
        table.pop(field.option, None)  # the panel's value replaces the general field's (Anima's and HunyuanImage's vae)
        _carry(written, config, field.gui, field.option, field.kind, source)
    table.update((option, value) for option, value in written.items() if option not in panel.unread)
    unread = [f"{option}={str(value).lower() if isinstance(value, bool) else value}" for option, value in written.items() if option in panel.unread]
    if not unread:
        return []
    return [
        f"the GUI also writes {' '.join(unread)}, which {arch.training_script} (sd-scripts 48d368fa) has no option for: "
        "sd-scripts would ignore it without a word; left out (add it to the TOML if your sd-scripts has it)"
    ]


def _check_is_gui_config(config: Any, source: str) -> None:
    if not isinstance(config, Mapping):
        raise ValueError(f"{source} is not a Kohya GUI config (a JSON object of settings)")
    found = [key for key in GUI_MARKER_KEYS if key in config]
    if len(found) < 2:
        raise ValueError(
            f"{source} is not a Kohya GUI config: it has {'only ' + found[0] if found else 'none'} of the settings every "
            f"GUI era saves ({', '.join(GUI_MARKER_KEYS)}); save the config from the GUI's LoRA tab"
        )


def _training_options(table: Dict[str, Any], config: Mapping[str, Any], source: str, arch: Architecture) -> List[str]:
    """The training options the GUI derives rather than passes as they are; returns notes."""
    notes: List[str] = []
    # Training length: the GUI passes max_train_steps when set, else derives steps from epochs.
    if _truthy(config.get("max_train_steps", "")) and _number("max_train_steps", config["max_train_steps"], source, int) > 0:
        table["max_train_steps"] = _number("max_train_steps", config["max_train_steps"], source, int)
    else:
        for key in ("max_train_epochs", "epoch"):
            if _truthy(config.get(key, "")) and _number(key, config[key], source, int) > 0:
                table["max_train_epochs"] = _number(key, config[key], source, int)
                break
    if "lr_warmup_steps" not in table and _truthy(config.get("lr_warmup", "")) and _number("lr_warmup", config["lr_warmup"], source) > 0:
        notes.append(f"the GUI warmed up for {config['lr_warmup']}% of the steps; set lr_warmup_steps to that number of steps")

    clip_skip = config.get("clip_skip", "")
    if _truthy(clip_skip) and _number("clip_skip", clip_skip, source, int) > 1 and not left_out_by_gui("clip_skip", arch):
        table["clip_skip"] = _number("clip_skip", clip_skip, source, int)
    max_token_length = config.get("max_token_length", "")
    if _truthy(max_token_length) and _number("max_token_length", max_token_length, source, int) > 75 and not left_out_by_gui("max_token_length", arch):
        table["max_token_length"] = _number("max_token_length", max_token_length, source, int)
    _noise_and_loss(table, config, source)
    attention = config.get("xformers", "")
    if attention is True or attention == "xformers":
        table["xformers"] = True
    elif attention == "sdpa":
        table["sdpa"] = True
    if arch.is_sdxl:
        if config.get("sdxl_no_half_vae") is True:
            table["no_half_vae"] = True
        if config.get("sdxl_cache_text_encoder_outputs") is True:
            table["cache_text_encoder_outputs"] = True
    if _truthy(config.get("sample_prompts", "")):
        notes.append("sample prompts are not carried over: write them to a file and pass --sample_prompts")
    return notes


def _noise_and_loss(table: Dict[str, Any], config: Mapping[str, Any], source: str) -> None:
    if config.get("noise_offset_type", "Original") == "Multires":
        _carry(table, config, "multires_noise_iterations", "multires_noise_iterations", "intpos", source)
        _carry(table, config, "multires_noise_discount", "multires_noise_discount", "pos", source)
    else:
        _carry(table, config, "noise_offset", "noise_offset", "pos", source)
        if _truthy(config.get("adaptive_noise_scale", "")) and _number("adaptive_noise_scale", config["adaptive_noise_scale"], source) != 0:
            table["adaptive_noise_scale"] = _number("adaptive_noise_scale", config["adaptive_noise_scale"], source)
    loss_type = config.get("loss_type", "")
    if _truthy(loss_type) and loss_type != "l2":
        table["loss_type"] = loss_type
        _carry(table, config, "huber_c", "huber_c", "pos", source)
        _carry(table, config, "huber_schedule", "huber_schedule", "str", source)


def _network_options(table: Dict[str, Any], config: Mapping[str, Any], module: str, pairs, source: str) -> None:
    table["network_module"] = module
    table["network_dim"] = _number("network_dim", gui_value(config, "network_dim"), source, int)
    alpha = _number("network_alpha", gui_value(config, "network_alpha"), source)
    table["network_alpha"] = int(alpha) if float(alpha).is_integer() else alpha
    if pairs:
        table["network_args"] = [f"{k}={v}" for k, v in pairs]


_NETWORK_OPTIONS = ("--network_module", "--network_dim", "--network_alpha", "--network_args")


def overridden_settings(additional: List[str], table: Mapping[str, Any]) -> List[str]:
    """The network options in additional_parameters whose value differs from the converted one,
    each as `--option=value` (sd-scripts takes the later one, so they win)."""
    found: Dict[str, List[str]] = {}
    current = None
    for token in additional:
        name, equals, value = token.partition("=")
        if name in _NETWORK_OPTIONS:
            current = name
            found[name] = [value] if equals else []
        elif token.startswith("--"):
            current = None
        elif current is not None:
            found[current].append(token)
    differing = []
    for name, values in found.items():
        converted = table.get(name[2:])
        given = " ".join(values)
        if name == "--network_args" or converted is None or given != str(converted):
            differing.append(f"{name}={given}" if given else name)
    return differing


def _learning_rates(table: Dict[str, Any], config: Mapping[str, Any], source: str, unet_only: bool = False) -> None:
    """The GUI's rule: both LRs set -> both; one set -> that one and train only that part; none -> learning_rate.
    unet_only (HunyuanImage-2.1): the GUI writes network_train_unet_only whatever the LRs (L1903-1909)."""
    lr = _number("learning_rate", config.get("learning_rate", 0) or 0, source)
    te = _number("text_encoder_lr", config.get("text_encoder_lr", 0) or 0, source) if "text_encoder_lr" in config else 0.0
    unet = _number("unet_lr", config.get("unet_lr", 0) or 0, source) if "unet_lr" in config else 0.0
    if lr == te == unet == 0:
        raise NetworkArgError("learning_rate", config.get("learning_rate"), f"a learning rate above 0 (learning_rate, unet_lr or text_encoder_lr in {source})")
    table["learning_rate"] = lr
    text_encoder_lr = _with_t5xxl_lr(te, config, source)
    if te:
        table["text_encoder_lr"] = text_encoder_lr
    if unet:
        table["unet_lr"] = unet
    if unet_only or (unet and not te):
        table["network_train_unet_only"] = True
    elif te and not unet:
        table["network_train_text_encoder_only"] = True


def _with_t5xxl_lr(te: float, config: Mapping[str, Any], source: str):
    """The GUI's "T5XXL learning rate" (v26.0.0 train_model L1862-1876): text_encoder_lr becomes
    [text_encoder_lr, t5xxl_lr] (sd-scripts gives the second to the T5 encoder); refused without a text encoder LR."""
    t5 = _number("t5xxl_lr", config["t5xxl_lr"], source) if _truthy(config.get("t5xxl_lr", "")) else 0.0
    if t5 <= 0:
        return te
    if not te:
        raise NetworkArgError("t5xxl_lr", config["t5xxl_lr"], f"0 while text_encoder_lr is 0: the GUI refuses a T5XXL learning rate without a text encoder one (in {source})")
    return [te, t5]


def launch_command(converted: SdScriptsConfig, toml_path: str) -> str:
    """The `accelerate launch` line for a TOML written from `converted`, shell-quoted."""
    parts = ["accelerate", "launch"] + converted.accelerate_args + [converted.script, "--config_file", toml_path] + converted.additional_parameters
    return " ".join(shlex.quote(p) for p in parts)


def additional_parameters_line(converted: SdScriptsConfig) -> str:
    """What to paste into the GUI's "Additional parameters" box: later options override the GUI's own."""
    line = f"--network_module={converted.network_module}"
    if converted.network_args:
        line += " --network_args " + " ".join(f'"{k}={v}"' for k, v in converted.network_args)
    return line

