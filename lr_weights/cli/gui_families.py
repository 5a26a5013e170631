"""Which model family a Kohya GUI LoRA config trains, and what that family's GUI panel passes on.

Read from bmaltais/kohya_ss v26.0.0 (486c00f0) `kohya_gui/lora_gui.py` train_model, with
`class_sd3.py`, `class_lumina.py` and `class_source_model.py`:
- The model checkboxes (sdxl, sd3_checkbox, flux1_checkbox, hunyuan_image_checkbox,
  anima_checkbox, lumina_checkbox) exclude one another: checking one greys out the others
  (class_source_model.py, toggle_checkboxes).
- SD3 has no LoRA type of its own: it is the SD3 checkbox with LoRA type "Standard" or "Kohya
  LoCon", which train_model turns into `networks.lora_sd3` (L1781) with those types' network_args
  (the SD-shaped block panel, rank_dropout / module_dropout, LoCon's conv_dim / conv_alpha, the
  LoRA+ ratios) and runs sd3_train_network.py (L1591).
- "Lumina" is a LoRA type that needs the Lumina checkbox, and the checkbox needs the type
  (train_model refuses either alone, L1310-1320): `networks.lora_lumina` (L1740) with nothing but
  the LoRA+ ratios (L1855), run by lumina_train_network.py (L1597).
- The panels' fields go into the sd-scripts TOML under sd-scripts' names (L1911-1927, L1944-1966,
  L2144-2291, below); the TOML then loses every value that is "", False, None or 0 (L2346).
  For Lumina the GUI also leaves out clip_skip and max_token_length (L1972, L2030), as for Anima
  and HunyuanImage-2.1 (and max_token_length for Flux1).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple

from lr_weights.archs import ANIMA, FLUX, HUNYUAN_IMAGE, LUMINA, SD, SD3, SDXL
from lr_weights.archs.base import Architecture

# GUI LoRA types of the DiT kind -> their family (its entry point and training script are its data).
DIT_TYPES = {"Flux1": FLUX, "Anima": ANIMA, "HunyuanImage-2.1": HUNYUAN_IMAGE, "Lumina": LUMINA}
MODEL_CHECKBOXES = ("sdxl", "sd3_checkbox", "flux1_checkbox", "hunyuan_image_checkbox", "anima_checkbox", "lumina_checkbox")
SD3_LORA_TYPES = ("Standard", "Kohya LoCon")  # the types train_model gives networks.lora_sd3

# A family's GUI panel: (GUI field, sd-scripts option, kind). Kinds as gui_config's _OPTIONS:
# str (non-empty), bool (True), intpos (whole number > 0), nonzero (a number other than 0: the
# GUI's TOML drops 0, and sd-scripts' default for each of these is 0 or the GUI's own).
SD3_PANEL: Tuple[Tuple[str, str, str], ...] = (
    ("sd3_clip_l", "clip_l", "str"),
    ("clip_g", "clip_g", "str"),
    ("sd3_t5xxl", "t5xxl", "str"),
    ("sd3_cache_text_encoder_outputs", "cache_text_encoder_outputs", "bool"),
    ("sd3_cache_text_encoder_outputs_to_disk", "cache_text_encoder_outputs_to_disk", "bool"),
    ("sd3_clip_l_dropout_rate", "clip_l_dropout_rate", "nonzero"),
    ("clip_g_dropout_rate", "clip_g_dropout_rate", "nonzero"),
    ("sd3_t5_dropout_rate", "t5_dropout_rate", "nonzero"),
    ("sd3_disable_mmap_load_safetensors", "disable_mmap_load_safetensors", "bool"),
    ("sd3_enable_scaled_pos_embed", "enable_scaled_pos_embed", "bool"),
    ("sd3_fused_backward_pass", "fused_backward_pass", "bool"),
    ("logit_mean", "logit_mean", "nonzero"),
    ("logit_std", "logit_std", "nonzero"),
    ("mode_scale", "mode_scale", "nonzero"),
    ("pos_emb_random_crop_rate", "pos_emb_random_crop_rate", "nonzero"),
    ("save_clip", "save_clip", "bool"),
    ("save_t5xxl", "save_t5xxl", "bool"),
    ("t5xxl_device", "t5xxl_device", "str"),
    ("t5xxl_dtype", "t5xxl_dtype", "str"),
    ("sd3_text_encoder_batch_size", "text_encoder_batch_size", "intpos"),
    ("weighting_scheme", "weighting_scheme", "str"),
    ("blocks_to_swap", "blocks_to_swap", "intpos"),
)
LUMINA_PANEL: Tuple[Tuple[str, str, str], ...] = (
    ("lumina_gemma2", "gemma2", "str"),
    ("lumina_ae", "ae", "str"),
    ("lumina_cache_text_encoder_outputs", "cache_text_encoder_outputs", "bool"),
    ("lumina_cache_text_encoder_outputs_to_disk", "cache_text_encoder_outputs_to_disk", "bool"),
    ("lumina_discrete_flow_shift", "discrete_flow_shift", "nonzero"),
    ("lumina_model_prediction_type", "model_prediction_type", "str"),
    ("lumina_timestep_sampling", "timestep_sampling", "str"),
    ("lumina_sigmoid_scale", "sigmoid_scale", "nonzero"),
    ("lumina_gemma2_max_token_length", "gemma2_max_token_length", "intpos"),
    ("lumina_system_prompt", "system_prompt", "str"),
    ("lumina_use_flash_attn", "use_flash_attn", "bool"),
    ("lumina_use_sage_attn", "use_sage_attn", "bool"),
    ("blocks_to_swap", "blocks_to_swap", "intpos"),
)
# entry point -> its panel; a family not here has its model files and options left to the user.
PANELS = {SD3.entry_point: SD3_PANEL, LUMINA.entry_point: LUMINA_PANEL}
# SD options the GUI leaves out of the TOML for these families (entry points).
LEFT_OUT = {
    "clip_skip": (HUNYUAN_IMAGE.entry_point, ANIMA.entry_point, LUMINA.entry_point),
    "max_token_length": (FLUX.entry_point, HUNYUAN_IMAGE.entry_point, ANIMA.entry_point, LUMINA.entry_point),
}


def gui_architecture(config: Mapping[str, Any], lora_type: str, source: str) -> Architecture:
    """The family `config` trains, from its LoRA type and model checkbox, as train_model picks it."""
    checked = [key for key in MODEL_CHECKBOXES if config.get(key) is True]
    if len(checked) > 1:
        raise ValueError(
            f"{source}: {' and '.join(f'{key}=true' for key in checked)}: the GUI lets one model checkbox be checked "
            "(SDXL, SD3, Flux.1, HunyuanImage-2.1, Anima or Lumina); keep the one of the model you train"
        )
    lumina = config.get("lumina_checkbox") is True
    if lumina != (lora_type == "Lumina"):
        raise ValueError(
            f"{source}: LoRA_type {lora_type!r} with lumina_checkbox={'true' if lumina else 'false'}: the GUI trains Lumina "
            "only with both (LoRA type 'Lumina' and the Lumina model checkbox) and refuses either alone; set both or neither"
        )
    if config.get("sd3_checkbox") is True:
        if lora_type not in SD3_LORA_TYPES:
            raise ValueError(
                f"{source}: LoRA_type {lora_type!r} with sd3_checkbox=true: SD3 trains with lr_weights.sd3, which stands for "
                f"networks.lora_sd3, the module the GUI uses for LoRA_type {' and '.join(SD3_LORA_TYPES)}; set one of those"
            )
        return SD3
    if lora_type in DIT_TYPES:
        return DIT_TYPES[lora_type]
    return SDXL if config.get("sdxl") is True else SD


def panel_of(arch: Architecture) -> Optional[Tuple[Tuple[str, str, str], ...]]:
    return PANELS.get(arch.entry_point)


def left_out_by_gui(option: str, arch: Architecture) -> bool:
    return arch.entry_point in LEFT_OUT.get(option, ())
