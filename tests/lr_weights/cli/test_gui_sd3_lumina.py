"""`lr-weights gui` for Kohya GUI v26's SD3 (LoRA type Standard / Kohya LoCon with the SD3 checkbox)
and Lumina (LoRA type Lumina with the Lumina checkbox).

Expected values: what the GUI itself wrote for each synthetic config (NAME.gui.toml, recorded by
running kohya_ss v26.0.0's lora_gui.train_model; tests/fixtures/gui-configs/README.md says how),
with the module switched to ours and the differences the conversion states in its notes.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from lr_weights.cli.gui_config import SD_BLOCK_PANEL, gui_to_sd_scripts
from lr_weights.cli.gui_families import LUMINA_PANEL, SD3_PANEL

SYNTHETIC = Path(__file__).resolve().parents[2] / "fixtures" / "gui-configs" / "synthetic"
# config -> (our module, the panel, network_args we add that the GUI does not pass)
FIXTURES = {
    "synthetic/sd3-standard-blocks-v26.0.0.json": ("lr_weights.sd3", SD3_PANEL, []),
    "synthetic/sd3-locon-v26.0.0.json": ("lr_weights.sd3", SD3_PANEL, []),
    # the dropouts: v26.0.0 drops them for Lumina, its main branch passes them (b1cce441), as we do
    "synthetic/lumina-blocks-v26.0.0.json": ("lr_weights.lumina", LUMINA_PANEL, ["rank_dropout=0.1", "module_dropout=0.05"]),
}


def recorded(name: str):
    """(the training script the GUI ran, the TOML it wrote) for fixture `name`."""
    path = SYNTHETIC.parent / name.replace(".json", ".gui.toml")
    text = path.read_text(encoding="utf-8")
    script = re.match(r"# .*: (\S+\.py) --config_file", text).group(1)
    return script, tomllib.loads(text)


def load(name: str):
    return json.loads((SYNTHETIC.parent / name).read_text(encoding="utf-8"))


def check_module_script_and_network_args(cli, tmp_path, name, module, added):
    """Our TOML for fixture `name` names `module`, the GUI's training script and the GUI's network
    args less the SD block panel (which no DiT family reads), in its order, plus `added`."""
    script, gui = recorded(name)
    out = tmp_path / "run.toml"
    result = cli("gui", SYNTHETIC.parent / name, "-o", out)
    assert result.code == 0, result.err
    table = tomllib.loads(out.read_text(encoding="utf-8"))
    converted = gui_to_sd_scripts(load(name))
    assert table["network_module"] == module and converted.arch.upstream_module == gui["network_module"]
    assert result.out.strip().endswith(f"{script} --config_file {out}") and converted.script == script
    kept = [arg for arg in gui.get("network_args", []) if arg.split("=")[0] not in SD_BLOCK_PANEL]
    assert sorted(table.get("network_args", [])) == sorted(kept + added)
    assert [arg for arg in table.get("network_args", []) if arg in kept] == kept  # in the GUI's order


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_module_script_and_network_args_are_the_guis(cli, tmp_path, name):
    module, _, added = FIXTURES[name]
    check_module_script_and_network_args(cli, tmp_path, name, module, added)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_the_family_panel_reaches_the_toml_as_the_gui_writes_it(name):
    _, panel, _ = FIXTURES[name]
    _, gui = recorded(name)
    table = gui_to_sd_scripts(load(name)).table
    for field in panel.fields:
        if field.option not in panel.unread:
            assert table.get(field.option) == gui.get(field.option), field.option
    for option in ("clip_skip", "max_token_length", "pretrained_model_name_or_path", "text_encoder_lr", "unet_lr"):
        if option in table or option in gui:
            # the GUI writes text_encoder_lr as [te, te] where one number means the same to sd-scripts,
            # and max_token_length 75, sd-scripts' default, which we leave out
            given = gui.get(option)
            if option == "text_encoder_lr" and len(set(given)) == 1:
                given = given[0]
            if option == "max_token_length" and given == 75:
                given = None
            assert table.get(option) == given, option


def test_sd3_block_panel_is_named_in_a_note(cli):
    result = cli("gui", SYNTHETIC / "sd3-standard-blocks-v26.0.0.json", "--print-args")
    assert result.code == 0, result.err
    assert result.out.split() == ["--network_module=lr_weights.sd3", "--network_args", '"rank_dropout=0.1"', '"loraplus_unet_lr_ratio=16"']
    result = cli("gui", SYNTHETIC / "sd3-standard-blocks-v26.0.0.json")
    assert "block panel has down_lr_weight=sine mid_lr_weight=0.5 up_lr_weight=cosine block_lr_zero_threshold=0.1 block_dims=" in result.err
    assert "passes it to networks.lora_sd3, which ignores it" in result.err and "joint_lr_weight" in result.err
    assert "not carried over" not in result.err  # the SD3 panel is


def test_lumina_notes_name_the_panel_and_the_dropouts_the_gui_drops(cli):
    result = cli("gui", SYNTHETIC / "lumina-blocks-v26.0.0.json")
    assert result.code == 0, result.err
    assert "block panel has down_lr_weight=1,1,1,1,1,1,1,1,1,1,1,1 up_lr_weight=sine conv_block_dims=" in result.err
    assert "the GUI drops it" in result.err and "refiner_lr_weight, layer_lr_weight" in result.err
    assert "rank_dropout=0.1 module_dropout=0.05: the GUI v26.0.0 does not pass these for LoRA_type Lumina; later GUIs do" in result.err


def config(tmp_path, **fields):
    base = {"network_dim": 16, "network_alpha": 16, "learning_rate": 1e-4, "unet_lr": 1e-4, "output_dir": "/out", "train_data_dir": "/data"}
    path = tmp_path / "gui.json"
    path.write_text(json.dumps(dict(base, **fields)), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "fields, fragments",
    [
        ({"LoRA_type": "LyCORIS/LoKr", "sd3_checkbox": True}, ["LoRA_type 'LyCORIS/LoKr' with sd3_checkbox=true", "Standard and Kohya LoCon"]),
        ({"LoRA_type": "Kohya DyLoRA", "sd3_checkbox": True}, ["LoRA_type 'Kohya DyLoRA' with sd3_checkbox=true"]),
        ({"LoRA_type": "Standard", "sd3_checkbox": True, "sdxl": True}, ["sdxl=true and sd3_checkbox=true", "one model checkbox"]),
        ({"LoRA_type": "Lumina"}, ["LoRA_type 'Lumina' with lumina_checkbox=false", "refuses either alone"]),
        ({"LoRA_type": "Standard", "lumina_checkbox": True}, ["LoRA_type 'Standard' with lumina_checkbox=true"]),
        ({"LoRA_type": "Standard", "sd3_checkbox": True, "rank_dropout": "lots"}, ["rank_dropout", "lots"]),
        ({"LoRA_type": "Lumina", "lumina_checkbox": True, "loraplus_lr_ratio": "-2"}, ["loraplus_lr_ratio", "-2"]),
        ({"LoRA_type": "Lumina", "lumina_checkbox": True, "lumina_gemma2_max_token_length": "long"}, ["lumina_gemma2_max_token_length='long'", "a number"]),
        ({"LoRA_type": "Standard", "sd3_checkbox": True, "t5xxl_lr": 1e-5}, ["t5xxl_lr=1e-05", "text_encoder_lr is 0"]),
    ],
)
def test_what_the_gui_or_the_module_refuses_is_an_error_naming_key_and_value(cli, tmp_path, fields, fragments):
    check_refused(cli, tmp_path, fields, fragments)


def check_refused(cli, tmp_path, fields, fragments):
    """`lr-weights gui` on a config of `fields` exits 2 with an error holding every fragment, writing nothing."""
    out = tmp_path / "out.toml"
    result = cli("gui", config(tmp_path, **fields), "-o", out)
    assert result.code == 2 and result.err.startswith("lr-weights gui: error: "), result.err
    for fragment in fragments:
        assert fragment in result.err
    assert not out.exists()


def test_t5xxl_lr_makes_text_encoder_lr_a_pair_as_the_gui_does():
    table = gui_to_sd_scripts(load("synthetic/sd3-locon-v26.0.0.json")).table
    assert table["text_encoder_lr"] == recorded("synthetic/sd3-locon-v26.0.0.json")[1]["text_encoder_lr"] == [5e-5, 1e-5]


def test_plan_from_an_sd3_gui_config_plans_sd3(cli):
    from .test_plan import plan_json

    result, plan = plan_json(cli, "--gui-config", SYNTHETIC / "sd3-locon-v26.0.0.json", "--arch", "sd3-large")
    assert result.code == 0, result.err
    assert plan["arch"] == "sd3-large" and plan["network_module"] == "lr_weights.sd3"
    result, plan = plan_json(cli, "--gui-config", SYNTHETIC / "lumina-blocks-v26.0.0.json")
    assert result.code == 0, result.err
    assert plan["arch"] == "lumina" and plan["network_module"] == "lr_weights.lumina"


@pytest.mark.parametrize(
    "lora_type,checkbox,kept",
    [
        ("Standard", "sd3_checkbox", {"clip_skip": 2, "max_token_length": 150}),
        ("Flux1", "flux1_checkbox", {"clip_skip": 2}),
        ("Anima", "anima_checkbox", {}),
        ("HunyuanImage-2.1", "hunyuan_image_checkbox", {}),
        ("Lumina", "lumina_checkbox", {}),
    ],
)
def test_clip_skip_and_max_token_length_only_where_the_gui_passes_them(tmp_path, lora_type, checkbox, kept):
    fields = {"LoRA_type": lora_type, checkbox: True, "clip_skip": 2, "max_token_length": "150", "learning_rate": 1e-4, "output_dir": "/out"}
    table = gui_to_sd_scripts(fields).table
    assert {key: table[key] for key in ("clip_skip", "max_token_length") if key in table} == kept


def test_the_dit_types_dropouts_are_passed_with_a_note(cli, tmp_path):
    result = cli("gui", config(tmp_path, LoRA_type="Anima", anima_checkbox=True, rank_dropout=0.2), "--print-args")
    assert result.out.split() == ["--network_module=lr_weights.anima", "--network_args", '"rank_dropout=0.2"']
    result = cli("gui", config(tmp_path, LoRA_type="Anima", anima_checkbox=True, rank_dropout=0.2))
    assert "rank_dropout=0.2: the GUI v26.0.0 does not pass these for LoRA_type Anima; later GUIs do" in result.err
