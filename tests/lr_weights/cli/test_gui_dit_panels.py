"""`lr-weights gui` carries Kohya GUI v26's Flux.1, Anima and HunyuanImage-2.1 panels (model files,
flow, caching, offload settings) into the TOML as the GUI writes them.

Expected values: what the GUI itself wrote for each synthetic config (NAME.gui.toml, recorded by
running kohya_ss v26.0.0's lora_gui.train_model; tests/fixtures/gui-configs/README.md says how),
with the module switched to ours and the differences the conversion states in its notes.
"""

from __future__ import annotations

import pytest

from lr_weights.cli.gui_config import gui_to_sd_scripts
from lr_weights.cli.gui_families import ANIMA_PANEL, FLUX_PANEL, HUNYUAN_IMAGE_PANEL

from .test_gui_sd3_lumina import SYNTHETIC, check_module_script_and_network_args, check_refused, load, recorded

# config -> (our module, the panel, network_args we add that the GUI does not pass, what the GUI
# writes that the training script has no option for: left out with a note)
FIXTURES = {
    # the Flux1 preset the GUI ships (kohya_ss v26.0.0 presets/lora/"flux1D - adamw8bit fp8.json", unchanged)
    "v26.0.0/presets-lora-flux1D-adamw8bit-fp8.json": ("lr_weights.flux", FLUX_PANEL, [], []),
    "synthetic/flux1-panel-v26.0.0.json": ("lr_weights.flux", FLUX_PANEL, ["rank_dropout=0.1"], ["mem_eff_save=true", "double_blocks_to_swap=2"]),
    "synthetic/flux1-defaults-v26.0.0.json": ("lr_weights.flux", FLUX_PANEL, [], ["show_timesteps=console", "show_timesteps_resolution=1024,768"]),
    "synthetic/anima-panel-v26.0.0.json": (
        "lr_weights.anima", ANIMA_PANEL, ["module_dropout=0.05"],
        ["qwen_image_vae_2d=true", "compile=true", "compile_backend=inductor", "compile_mode=max-autotune", "compile_dynamic=true",
         "compile_fullgraph=true", "compile_cache_size_limit=32", "show_timesteps=image", "show_timesteps_resolution=1024"],
    ),
    "synthetic/anima-defaults-v26.0.0.json": ("lr_weights.anima", ANIMA_PANEL, [], []),
    "synthetic/hunyuan-image-panel-v26.0.0.json": ("lr_weights.hunyuan_image", HUNYUAN_IMAGE_PANEL, ["rank_dropout=0.1"], []),
    "synthetic/hunyuan-image-te-lr-v26.0.0.json": ("lr_weights.hunyuan_image", HUNYUAN_IMAGE_PANEL, [], []),
}
# options outside the panels that the GUI writes differently per family (vae replaced, v2 /
# clip_skip / max_token_length left out, HunyuanImage's network_train_unet_only)
FAMILY_SENSITIVE = (
    "pretrained_model_name_or_path", "vae", "v2", "clip_skip", "max_token_length", "fp8_base", "text_encoder_lr", "unet_lr",
    "network_train_unet_only", "network_train_text_encoder_only",
)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_module_script_and_network_args_are_the_guis(cli, tmp_path, name):
    module, _, added, _ = FIXTURES[name]
    check_module_script_and_network_args(cli, tmp_path, name, module, added)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_the_family_panel_reaches_the_toml_as_the_gui_writes_it(name):
    _, panel, _, unread = FIXTURES[name]
    _, gui = recorded(name)
    table = gui_to_sd_scripts(load(name)).table
    for field in panel.fields:
        if field.option in panel.unread:
            assert field.option not in table, field.option
        else:
            assert table.get(field.option) == gui.get(field.option), field.option
    for option in FAMILY_SENSITIVE:
        given = gui.get(option)
        if option == "text_encoder_lr" and given is not None and len(set(given)) == 1:
            given = given[0]  # [te, te] means te to sd-scripts
        if option == "clip_skip" and given == 1:
            given = None  # 1 is sd-scripts' default (the last layer), which the conversion leaves out
        assert table.get(option) == given, option
    assert sorted(f"{o}={str(gui[o]).lower() if isinstance(gui[o], bool) else gui[o]}" for o in panel.unread if o in gui) == sorted(unread)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_what_the_script_cannot_read_is_named_in_a_note(name):
    unread = FIXTURES[name][3]
    notes = [note for note in gui_to_sd_scripts(load(name)).notes if "has no option for" in note]
    if not unread:
        assert notes == []
    else:
        assert len(notes) == 1 and f"the GUI also writes {' '.join(unread)}, which" in notes[0]


def test_no_note_says_the_panel_is_not_carried(cli):
    for name in FIXTURES:
        result = cli("gui", SYNTHETIC.parent / name)
        assert result.code == 0, result.err
        assert "model files" not in result.err  # no note that the panel is not (or cannot be) carried


def test_hunyuan_image_trains_only_the_dit_whatever_the_lrs():
    # the GUI's rule (train_model L1903-1909): a text encoder LR alone does not make it train the text encoder
    table = gui_to_sd_scripts(load("synthetic/hunyuan-image-te-lr-v26.0.0.json")).table
    assert table["network_train_unet_only"] is True and "network_train_text_encoder_only" not in table
    assert table["text_encoder_lr"] == 5e-5 and "unet_lr" not in table


@pytest.mark.parametrize(
    "fields, fragments",
    [
        ({"LoRA_type": "Anima"}, ["LoRA_type 'Anima' with anima_checkbox=false", "refuses either alone"]),
        ({"LoRA_type": "Standard", "anima_checkbox": True}, ["LoRA_type 'Standard' with anima_checkbox=true", "Kohya LoHa / LoKr"]),
        ({"LoRA_type": "Standard", "flux1_checkbox": True}, ["LoRA_type 'Standard' with flux1_checkbox=true", "networks.lora_flux", "'Flux1'"]),
        ({"LoRA_type": "Kohya LoCon", "hunyuan_image_checkbox": True}, ["with hunyuan_image_checkbox=true", "networks.lora_hunyuan_image"]),
        ({"LoRA_type": "Flux1", "flux1_checkbox": True, "guidance_scale": "strong"}, ["guidance_scale='strong'", "a number"]),
        ({"LoRA_type": "Anima", "anima_checkbox": True, "anima_vae_chunk_size": "big"}, ["anima_vae_chunk_size='big'", "a number"]),
        ({"LoRA_type": "Anima", "anima_checkbox": True, "anima_compile": True, "anima_torch_compile": True}, ["anima_compile=true and anima_torch_compile=true", "refuses"]),
    ],
)
def test_what_the_gui_refuses_is_an_error_naming_key_and_value(cli, tmp_path, fields, fragments):
    check_refused(cli, tmp_path, fields, fragments)


@pytest.mark.parametrize("lora_type,checkbox", [("Flux1", "flux1_checkbox"), ("HunyuanImage-2.1", "hunyuan_image_checkbox")])
def test_without_its_checkbox_the_panel_is_not_written_and_a_note_says_so(lora_type, checkbox):
    # the GUI gates every panel field on the model checkbox (and then runs train_network.py)
    fields = {"LoRA_type": lora_type, "learning_rate": 1e-4, "output_dir": "/out", "ae": "ae.sft", "hunyuan_vae": "vae.sft", "vae": "sd_vae.sft"}
    converted = gui_to_sd_scripts(fields)
    assert "ae" not in converted.table and converted.table["vae"] == "sd_vae.sft"
    assert any(f"LoRA_type {lora_type} without {checkbox}: the GUI then runs train_network.py" in note for note in converted.notes)
    converted = gui_to_sd_scripts(dict(fields, **{checkbox: True}))
    assert converted.table.get("ae" if lora_type == "Flux1" else "vae") == ("ae.sft" if lora_type == "Flux1" else "vae.sft")
    assert not any("without" in note for note in converted.notes)


def test_lycoris_with_the_flux_checkbox_is_left_as_before():
    # the GUI runs LyCORIS on Flux.1 (train_model L1280-1291); that is gui_lycoris' matter, not refused here
    converted = gui_to_sd_scripts({"LoRA_type": "LyCORIS/LoKr", "flux1_checkbox": True, "learning_rate": 1e-4, "output_dir": "/out"})
    assert converted.network_module == "lr_weights.lycoris"


@pytest.mark.parametrize("checkbox,lora_type", [("anima_checkbox", "Anima"), ("hunyuan_image_checkbox", "HunyuanImage-2.1")])
def test_the_family_vae_replaces_the_sd_panels_even_when_empty(checkbox, lora_type):
    # train_model L1929-1931: vae = anima_vae / hunyuan_vae with the checkbox, so the SD panel's vae is never written
    fields = {"LoRA_type": lora_type, checkbox: True, "learning_rate": 1e-4, "output_dir": "/out", "vae": "sd_vae.sft", "anima_vae": "", "hunyuan_vae": ""}
    assert "vae" not in gui_to_sd_scripts(fields).table
