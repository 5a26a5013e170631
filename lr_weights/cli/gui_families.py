"""Which model family a Kohya GUI LoRA config trains, and what that family's GUI panel passes on.

Read from bmaltais/kohya_ss v26.0.0 (486c00f0) `kohya_gui/lora_gui.py` train_model, with
`class_sd3.py`, `class_lumina.py`, `class_flux1.py`, `class_anima.py`, `class_hunyuan_image.py`,
`class_advanced_training.py` and `class_source_model.py`:
- The model checkboxes (sdxl, sd3_checkbox, flux1_checkbox, hunyuan_image_checkbox,
  anima_checkbox, lumina_checkbox) exclude one another: checking one greys out the others
  (class_source_model.py, toggle_checkboxes).
- SD3 has no LoRA type of its own: it is the SD3 checkbox with LoRA type "Standard" or "Kohya
  LoCon", which train_model turns into `networks.lora_sd3` (L1781) with those types' network_args
  (the SD-shaped block panel, rank_dropout / module_dropout, LoCon's conv_dim / conv_alpha, the
  LoRA+ ratios) and runs sd3_train_network.py (L1591).
- "Lumina" is a LoRA type that needs the Lumina checkbox, and the checkbox needs the type
  (train_model refuses either alone, L1310-1320): `networks.lora_lumina` (L1740) with nothing but
  the LoRA+ ratios (L1855), run by lumina_train_network.py (L1597). "Anima" is the same with the
  Anima checkbox (L1296-1308; the checkbox also takes the native Kohya LoHa / LoKr).
- "Flux1" and "HunyuanImage-2.1" are LoRA types; the training script comes from the checkbox
  (L1586-1601), and so does every field of the family panel: without it the GUI runs
  train_network.py and writes none of them. The Flux.1 checkbox refuses another type but Flux1 OFT
  and LyCORIS (L1280-1291).
- The panels' fields go into the sd-scripts TOML under sd-scripts' names (L1911-1966,
  L2144-2345, below), each only with its family's checkbox; the TOML then loses every value that
  is "", False, None or 0 (L2346). For Lumina, Anima and HunyuanImage-2.1 the GUI leaves out
  clip_skip, and for those and Flux1 max_token_length (L1972, L2030); HunyuanImage also v2, and it
  trains the DiT only whatever the LRs (L1903-1909).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Optional, Tuple

from lr_weights.archs import ANIMA, FLUX, HUNYUAN_IMAGE, LUMINA, SD, SD3, SDXL
from lr_weights.archs.base import Architecture

# GUI LoRA types of the DiT kind -> their family (its entry point and training script are its data).
DIT_TYPES = {"Flux1": FLUX, "Anima": ANIMA, "HunyuanImage-2.1": HUNYUAN_IMAGE, "Lumina": LUMINA}
MODEL_CHECKBOXES = ("sdxl", "sd3_checkbox", "flux1_checkbox", "hunyuan_image_checkbox", "anima_checkbox", "lumina_checkbox")
SD3_LORA_TYPES = ("Standard", "Kohya LoCon")  # the types train_model gives networks.lora_sd3
# LoRA type -> its model checkbox, where train_model refuses either without the other (L1304-1320)
PAIRED_CHECKBOXES = {"Anima": "anima_checkbox", "Lumina": "lumina_checkbox"}
# model checkbox -> the LoRA type of ours it trains (train_model refuses the Flux.1 checkbox with a
# type other than Flux1, Flux1 OFT or LyCORIS, L1280-1291; with the HunyuanImage checkbox it would run
# hunyuan_image_train_network.py with another type's module). LyCORIS types are gui_lycoris' matter.
CHECKBOX_TYPES = {"flux1_checkbox": "Flux1", "hunyuan_image_checkbox": "HunyuanImage-2.1"}


class PanelField(NamedTuple):
    """One field of a family's GUI panel and the sd-scripts option train_model writes it as.

    kind is as gui_config's _OPTIONS: str (non-empty), bool (True), intpos (whole number > 0),
    nonzero (a number other than 0: the GUI's TOML drops 0). when: another GUI field that must be
    set for train_model to write this one; unless: a value it leaves out besides "", false and 0."""

    gui: str
    option: str
    kind: str
    when: str = ""
    unless: str = ""


class Panel(NamedTuple):
    """A family's GUI panel: written only with `checkbox` checked (train_model gates every field on
    it); `unread` are the options it writes that sd-scripts' training script has no argument for
    (argparse of flux/anima/sd3/lumina_train_network.py at sd-scripts 48d368fa): sd-scripts reads a
    --config_file key it does not know without a word and ignores it, so they are left out with a note."""

    checkbox: str
    fields: Tuple[PanelField, ...]
    unread: Tuple[str, ...] = ()
    exclusive: Tuple[str, ...] = ()  # GUI fields train_model refuses together


# show_timesteps: plot the sampled timesteps and exit without training (class_advanced_training.py);
# train_model writes it for Flux.1, SD3, Anima and Lumina, the resolution only with it (L2197-2208).
SHOW_TIMESTEPS = (
    PanelField("show_timesteps", "show_timesteps", "str"),
    PanelField("show_timesteps_resolution", "show_timesteps_resolution", "str", when="show_timesteps"),
)
SD3_PANEL = Panel("sd3_checkbox", (
    PanelField("sd3_clip_l", "clip_l", "str"),
    PanelField("clip_g", "clip_g", "str"),
    PanelField("sd3_t5xxl", "t5xxl", "str"),
    PanelField("sd3_cache_text_encoder_outputs", "cache_text_encoder_outputs", "bool"),
    PanelField("sd3_cache_text_encoder_outputs_to_disk", "cache_text_encoder_outputs_to_disk", "bool"),
    PanelField("sd3_clip_l_dropout_rate", "clip_l_dropout_rate", "nonzero"),
    PanelField("clip_g_dropout_rate", "clip_g_dropout_rate", "nonzero"),
    PanelField("sd3_t5_dropout_rate", "t5_dropout_rate", "nonzero"),
    PanelField("sd3_disable_mmap_load_safetensors", "disable_mmap_load_safetensors", "bool"),
    PanelField("sd3_enable_scaled_pos_embed", "enable_scaled_pos_embed", "bool"),
    PanelField("sd3_fused_backward_pass", "fused_backward_pass", "bool"),
    PanelField("logit_mean", "logit_mean", "nonzero"),
    PanelField("logit_std", "logit_std", "nonzero"),
    PanelField("mode_scale", "mode_scale", "nonzero"),
    PanelField("pos_emb_random_crop_rate", "pos_emb_random_crop_rate", "nonzero"),
    PanelField("save_clip", "save_clip", "bool"),
    PanelField("save_t5xxl", "save_t5xxl", "bool"),
    PanelField("t5xxl_device", "t5xxl_device", "str"),
    PanelField("t5xxl_dtype", "t5xxl_dtype", "str"),
    PanelField("sd3_text_encoder_batch_size", "text_encoder_batch_size", "intpos"),
    PanelField("weighting_scheme", "weighting_scheme", "str"),
    PanelField("blocks_to_swap", "blocks_to_swap", "intpos"),
) + SHOW_TIMESTEPS, unread=("show_timesteps", "show_timesteps_resolution"))
LUMINA_PANEL = Panel("lumina_checkbox", (
    PanelField("lumina_gemma2", "gemma2", "str"),
    PanelField("lumina_ae", "ae", "str"),
    PanelField("lumina_cache_text_encoder_outputs", "cache_text_encoder_outputs", "bool"),
    PanelField("lumina_cache_text_encoder_outputs_to_disk", "cache_text_encoder_outputs_to_disk", "bool"),
    PanelField("lumina_discrete_flow_shift", "discrete_flow_shift", "nonzero"),
    PanelField("lumina_model_prediction_type", "model_prediction_type", "str"),
    PanelField("lumina_timestep_sampling", "timestep_sampling", "str"),
    PanelField("lumina_sigmoid_scale", "sigmoid_scale", "nonzero"),
    PanelField("lumina_gemma2_max_token_length", "gemma2_max_token_length", "intpos"),
    PanelField("lumina_system_prompt", "system_prompt", "str"),
    PanelField("lumina_use_flash_attn", "use_flash_attn", "bool"),
    PanelField("lumina_use_sage_attn", "use_sage_attn", "bool"),
    PanelField("blocks_to_swap", "blocks_to_swap", "intpos"),
) + SHOW_TIMESTEPS, unread=("show_timesteps", "show_timesteps_resolution"))
# Flux.1 (class_flux1.py; train_model L1911-1927, L1944-1966, L1990, L2171-2208, L2212-2250). The network
# args of the panel (img_attn_dim ..., split_mode's train_blocks=single, split_qkv, train_t5xxl) are
# gui_config's. single/double_blocks_to_swap are the panel's deprecated sliders; mem_eff_save is
# flux_train.py's (full fine-tuning), not flux_train_network.py's.
FLUX_PANEL = Panel("flux1_checkbox", (
    PanelField("ae", "ae", "str"),
    PanelField("clip_l", "clip_l", "str"),
    PanelField("t5xxl", "t5xxl", "str"),
    PanelField("flux1_cache_text_encoder_outputs", "cache_text_encoder_outputs", "bool"),
    PanelField("flux1_cache_text_encoder_outputs_to_disk", "cache_text_encoder_outputs_to_disk", "bool"),
    PanelField("fp8_base_unet", "fp8_base_unet", "bool"),
    PanelField("discrete_flow_shift", "discrete_flow_shift", "nonzero"),
    PanelField("model_prediction_type", "model_prediction_type", "str"),
    PanelField("timestep_sampling", "timestep_sampling", "str"),
    PanelField("split_mode", "split_mode", "bool"),
    PanelField("t5xxl_max_token_length", "t5xxl_max_token_length", "intpos"),
    PanelField("guidance_scale", "guidance_scale", "nonzero"),
    PanelField("apply_t5_attn_mask", "apply_t5_attn_mask", "bool"),
    PanelField("cpu_offload_checkpointing", "cpu_offload_checkpointing", "bool"),
    PanelField("blocks_to_swap", "blocks_to_swap", "intpos"),
    PanelField("mem_eff_save", "mem_eff_save", "bool"),
    PanelField("single_blocks_to_swap", "single_blocks_to_swap", "intpos"),
    PanelField("double_blocks_to_swap", "double_blocks_to_swap", "intpos"),
) + SHOW_TIMESTEPS, unread=("mem_eff_save", "single_blocks_to_swap", "double_blocks_to_swap", "show_timesteps", "show_timesteps_resolution"))
# Anima (class_anima.py; train_model L2212-2345). Its VAE replaces the SD panel's vae (L1929-2138);
# attn_mode "torch" (the default) is left out; the per-block compile settings only with compile.
# qwen_image_vae_2d and the compile settings came to sd-scripts after 48d368fa.
ANIMA_PANEL = Panel("anima_checkbox", (
    PanelField("anima_qwen3", "qwen3", "str"),
    PanelField("anima_vae", "vae", "str"),
    PanelField("anima_llm_adapter_path", "llm_adapter_path", "str"),
    PanelField("anima_t5_tokenizer_path", "t5_tokenizer_path", "str"),
    PanelField("anima_cache_text_encoder_outputs", "cache_text_encoder_outputs", "bool"),
    PanelField("anima_cache_text_encoder_outputs_to_disk", "cache_text_encoder_outputs_to_disk", "bool"),
    PanelField("anima_discrete_flow_shift", "discrete_flow_shift", "nonzero"),
    PanelField("anima_timestep_sampling", "timestep_sampling", "str"),
    PanelField("anima_sigmoid_scale", "sigmoid_scale", "nonzero"),
    PanelField("anima_qwen3_max_token_length", "qwen3_max_token_length", "intpos"),
    PanelField("anima_t5_max_token_length", "t5_max_token_length", "intpos"),
    PanelField("anima_attn_mode", "attn_mode", "str", unless="torch"),
    PanelField("anima_split_attn", "split_attn", "bool"),
    PanelField("anima_vae_chunk_size", "vae_chunk_size", "intpos"),
    PanelField("anima_vae_disable_cache", "vae_disable_cache", "bool"),
    PanelField("anima_unsloth_offload_checkpointing", "unsloth_offload_checkpointing", "bool"),
    PanelField("anima_qwen_image_vae_2d", "qwen_image_vae_2d", "bool"),
    PanelField("anima_compile", "compile", "bool"),
    PanelField("anima_torch_compile", "torch_compile", "bool"),
    PanelField("anima_compile_backend", "compile_backend", "str", when="anima_compile"),
    PanelField("anima_compile_mode", "compile_mode", "str", when="anima_compile"),
    PanelField("anima_compile_dynamic", "compile_dynamic", "str", when="anima_compile", unless="auto"),
    PanelField("anima_compile_fullgraph", "compile_fullgraph", "bool", when="anima_compile"),
    PanelField("anima_compile_cache_size_limit", "compile_cache_size_limit", "intpos", when="anima_compile"),
    PanelField("blocks_to_swap", "blocks_to_swap", "intpos"),
) + SHOW_TIMESTEPS, unread=(
    "qwen_image_vae_2d", "compile", "compile_backend", "compile_mode", "compile_dynamic", "compile_fullgraph", "compile_cache_size_limit",
    "show_timesteps", "show_timesteps_resolution",
), exclusive=("anima_compile", "anima_torch_compile"))  # per-block and legacy torch compile (L1340)
# HunyuanImage-2.1 (class_hunyuan_image.py; train_model L2210-2290). Its VAE replaces the SD
# panel's vae; attn_mode is written whatever it is; no show_timesteps.
HUNYUAN_IMAGE_PANEL = Panel("hunyuan_image_checkbox", (
    PanelField("hunyuan_text_encoder", "text_encoder", "str"),
    PanelField("hunyuan_byt5", "byt5", "str"),
    PanelField("hunyuan_vae", "vae", "str"),
    PanelField("hunyuan_image_cache_text_encoder_outputs", "cache_text_encoder_outputs", "bool"),
    PanelField("hunyuan_image_cache_text_encoder_outputs_to_disk", "cache_text_encoder_outputs_to_disk", "bool"),
    PanelField("hunyuan_discrete_flow_shift", "discrete_flow_shift", "nonzero"),
    PanelField("hunyuan_model_prediction_type", "model_prediction_type", "str"),
    PanelField("hunyuan_timestep_sampling", "timestep_sampling", "str"),
    PanelField("hunyuan_sigmoid_scale", "sigmoid_scale", "nonzero"),
    PanelField("hunyuan_attn_mode", "attn_mode", "str"),
    PanelField("hunyuan_split_attn", "split_attn", "bool"),
    PanelField("hunyuan_fp8_scaled", "fp8_scaled", "bool"),
    PanelField("hunyuan_fp8_vl", "fp8_vl", "bool"),
    PanelField("hunyuan_text_encoder_cpu", "text_encoder_cpu", "bool"),
    PanelField("hunyuan_vae_chunk_size", "vae_chunk_size", "intpos"),
    PanelField("blocks_to_swap", "blocks_to_swap", "intpos"),
))
# entry point -> its panel.
PANELS = {
    SD3.entry_point: SD3_PANEL,
    LUMINA.entry_point: LUMINA_PANEL,
    FLUX.entry_point: FLUX_PANEL,
    ANIMA.entry_point: ANIMA_PANEL,
    HUNYUAN_IMAGE.entry_point: HUNYUAN_IMAGE_PANEL,
}
# SD options the GUI leaves out of the TOML for these families (entry points): clip_skip and
# max_token_length (L1972, L2030), v2 for HunyuanImage (L2135).
LEFT_OUT = {
    "clip_skip": (HUNYUAN_IMAGE.entry_point, ANIMA.entry_point, LUMINA.entry_point),
    "max_token_length": (FLUX.entry_point, HUNYUAN_IMAGE.entry_point, ANIMA.entry_point, LUMINA.entry_point),
    "v2": (HUNYUAN_IMAGE.entry_point,),
}
# Families the GUI always trains without text encoder LoRA: network_train_unet_only, never
# network_train_text_encoder_only, whatever the LRs (L1903-1909).
UNET_ONLY = (HUNYUAN_IMAGE.entry_point,)


def gui_architecture(config: Mapping[str, Any], lora_type: str, source: str) -> Architecture:
    """The family `config` trains, from its LoRA type and model checkbox, as train_model picks it."""
    checked = [key for key in MODEL_CHECKBOXES if config.get(key) is True]
    if len(checked) > 1:
        raise ValueError(
            f"{source}: {' and '.join(f'{key}=true' for key in checked)}: the GUI lets one model checkbox be checked "
            "(SDXL, SD3, Flux.1, HunyuanImage-2.1, Anima or Lumina); keep the one of the model you train"
        )
    for paired_type, checkbox in PAIRED_CHECKBOXES.items():
        checked_box = config.get(checkbox) is True
        if checked_box != (lora_type == paired_type):
            also = " (Anima also takes the native Kohya LoHa / LoKr, which lr_weights does not stand for)" if paired_type == "Anima" else ""
            raise ValueError(
                f"{source}: LoRA_type {lora_type!r} with {checkbox}={'true' if checked_box else 'false'}: the GUI trains {paired_type} "
                f"only with both (LoRA type {paired_type!r} and the {paired_type} model checkbox) and refuses either alone{also}; "
                "set both or neither"
            )
    for checkbox, family_type in CHECKBOX_TYPES.items():
        if config.get(checkbox) is True and lora_type != family_type and "LyCORIS" not in lora_type:
            family = DIT_TYPES[family_type]
            raise ValueError(
                f"{source}: LoRA_type {lora_type!r} with {checkbox}=true: {family.title} trains with {family.entry_point}, which stands "
                f"for {family.upstream_module}, the module the GUI uses for LoRA_type {family_type!r}; set that"
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


def panel_of(arch: Architecture) -> Optional[Panel]:
    return PANELS.get(arch.entry_point)


def left_out_by_gui(option: str, arch: Architecture) -> bool:
    return arch.entry_point in LEFT_OUT.get(option, ())


def trains_unet_only(arch: Architecture) -> bool:
    return arch.entry_point in UNET_ONLY
