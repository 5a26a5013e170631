"""Every verdict of the CLI is the module's: what a newcomer found drifting (issue 14), one test each.

Each test here failed on branch `layout` (the CLI validated on its own, or not at all) and checks
that `show`, `plan`, `gui`, `bake`, `demo` and `inspect` now answer what training would.
"""

import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from .test_gui import CONFIGS, write

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"
ONES_12 = ",".join(["1"] * 12)


def error_line(result):
    """The one line after the usage; the test fails if there is more (a traceback, say)."""
    lines = [line for line in result.err.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1, result.err
    assert "Traceback" not in result.err, result.err
    return errors[0]


@pytest.fixture
def lora_file(tmp_path):
    """A small LoRA file written by lr_weights.lora over the tiny SD model, lora_up non-zero."""
    from lr_weights import lora
    from lr_weights.models.tiny import build_tiny_sd

    text_encoder, unet = build_tiny_sd(seed=0)
    torch.manual_seed(0)
    network = lora.create_network(1.0, 4, 2, None, text_encoder, unet)
    with torch.no_grad():
        for module in network.all_loras:
            module.lora_up.weight.normal_(0, 0.1)
    path = tmp_path / "small.safetensors"
    network.save_weights(str(path), torch.float16, {"ss_network_module": "lr_weights.lora"})
    return path


@pytest.fixture
def lokr_names_file(tmp_path):
    """A file whose key names are LoKr's (what routes inspect/bake to lycoris-lora); names only."""
    path = tmp_path / "lokr.safetensors"
    name = "lora_unet_down_blocks_0_attentions_0_proj_in"
    save_file({f"{name}.lokr_w1": torch.ones(2, 2), f"{name}.lokr_w2": torch.ones(2, 2), f"{name}.alpha": torch.tensor(1.0)}, str(path))
    return path


@pytest.fixture
def no_lycoris(monkeypatch):
    """lycoris-lora not installed: importing it fails as it would."""
    for name in [m for m in sys.modules if m == "lycoris" or m.startswith("lycoris.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lycoris", None)
    monkeypatch.setitem(sys.modules, "lycoris.kohya", None)


# ---- show asks the module ---------------------------------------------------------------------


def test_show_refuses_a_negative_weight_the_threshold_lets_through(cli):
    result = cli("show", "--threshold", "-1", "down=-0.5")
    assert result.code == 2, result.out
    line = error_line(result)
    assert "down_lr_weight" in line and "weights >= 0" in line
    assert result.out == ""


def test_show_refuses_a_negative_unet_lr(cli):
    result = cli("show", "--unet-lr=-1e-4", "sine")
    assert result.code == 2, result.out
    line = error_line(result)
    assert "unet" in line and "-0.0001" in line and ">= 0" in line


def test_a_negative_number_after_an_option_is_a_value(cli):
    # argparse reads -1e-4 as an option unless told; the LR check then answers, not argparse.
    result = cli("show", "--unet-lr", "-1e-4", "sine")
    assert result.code == 2
    line = error_line(result)
    assert "expected one argument" not in line and ">= 0" in line


def test_a_negative_lbw_vector_after_lbw_is_a_value(cli, lora_file, tmp_path):
    out = tmp_path / "negative.safetensors"
    result = cli("bake", lora_file, "--lbw", "-1," + ",".join(["1"] * 16), "-o", out)
    assert result.code == 0, result.err
    assert out.exists()


def test_show_lbw_17_refuses_a_weight_it_cannot_hold(cli):
    # IN03 holds only a ResNet pair: the 17-value form has no entry for it.
    result = cli("show", "down=1,1,1,0.5,1,1,1,1,1,1,1,1", "--format", "lbw", "--lbw-length", "17")
    assert result.code == 2, result.out
    line = error_line(result)
    assert "IN03" in line and "26" in line


def test_show_lbw_numbers_are_rounded_at_double_precision(cli):
    result = cli("show", "linear-0.5", "--format", "lbw")
    assert result.code == 0, result.err
    values = result.out.strip().split(",")
    digits = [len(re.sub(r"[^0-9]", "", v).lstrip("0")) for v in values]
    assert max(digits) <= 15, values
    assert float(values[7]) == pytest.approx(0.5 / 11, rel=1e-14)


def test_show_hint_gives_valid_examples_not_the_bad_input(cli):
    result = cli("show", "sinus+.25")
    assert result.code == 2
    line = error_line(result)
    assert "down=sinus+.25" not in line and "down=sine+.25" in line


# ---- exit codes: 1 = trains nothing, 2 = bad input, in every subcommand -----------------------


def test_trains_nothing_exits_1_in_show_and_plan(cli):
    shown = cli("show", "down=0", "mid=0", "up=0")
    planned = cli("plan", "--arch", "sd1", "--unet_lr", "1e-4", "--network_args", "down_lr_weight=0", "mid_lr_weight=0", "up_lr_weight=0")
    assert (shown.code, planned.code) == (1, 1), (shown.err, planned.err)
    assert "nothing in the U-Net would train" in planned.err


def test_exit_codes_are_documented_alike():
    for path in (ROOT / "README.md", ROOT / "docs" / "cli.md"):
        text = " ".join(path.read_text(encoding="utf-8").split())
        assert "exit code 1" in text and "trains nothing" in text and "exit code 2" in text, path


# ---- plan reads what training reads -----------------------------------------------------------


def test_plan_takes_the_arch_from_our_sdxl_example(cli):
    result = cli("plan", "--json", "--config-file", EXAMPLES / "sdxl-lbw-dylora.toml")
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert plan["arch"] == "sdxl"
    groups = {g["description"]: g["lr"] for g in plan["groups"]}
    # text_encoder_lr = [2e-5, 1e-5]: one group per text encoder (LBW BASE is 1).
    assert groups["textencoder 1"] == pytest.approx(2e-5) and groups["textencoder 2"] == pytest.approx(1e-5)


def test_plan_takes_the_arch_from_a_toml_gui_wrote_for_sdxl(cli, tmp_path):
    toml = tmp_path / "sdxl.toml"
    assert cli("gui", write(tmp_path, sdxl=True), "-o", toml).code == 0
    result = cli("plan", "--json", "--config-file", toml)
    assert result.code == 0, result.err
    assert json.loads(result.out)["arch"] == "sdxl"


@pytest.mark.parametrize(
    "script, arch",
    [("train_network.py", "sd1"), ("sdxl_train_network.py", "sdxl"), ("flux_train_network.py", "flux"), ("sd3_train_network.py", "sd3"),
     ("lumina_train_network.py", "lumina"), ("anima_train_network.py", "anima"), ("hunyuan_image_train_network.py", "hunyuan_image")],
)
def test_plan_takes_the_arch_from_the_training_script_a_toml_names(cli, tmp_path, script, arch):
    # every family's script is its arch file's data (training_script), so a new family needs no CLI edit
    toml = tmp_path / "run.toml"
    toml.write_text(f"# accelerate launch {script} --config_file run.toml\nnetwork_dim = 4\n", encoding="utf-8")
    result = cli("plan", "--json", "--config-file", toml)
    assert result.code == 0, result.err
    assert json.loads(result.out)["arch"] == arch


def test_plan_text_encoder_lr_takes_a_list_like_sd_scripts(cli):
    result = cli("plan", "--json", "--arch", "sdxl", "--unet_lr", "1e-4", "--text_encoder_lr", "2e-5", "1e-5")
    assert result.code == 0, result.err
    groups = {g["description"]: g["lr"] for g in json.loads(result.out)["groups"]}
    assert groups["textencoder 1"] == pytest.approx(2e-5) and groups["textencoder 2"] == pytest.approx(1e-5)
    flux = cli("plan", "--arch", "flux", "--text_encoder_lr", "1e-5", "2e-5")
    assert flux.code == 0, flux.err


def test_a_12_value_down_list_for_sdxl_gets_the_modules_verdict_everywhere(cli, tmp_path):
    # upstream pads/cuts SD's down/mid/up lists with a warning; gui and plan say what training says.
    warning = "down_lr_weight has 12 values but the model has 9 blocks there"
    gui = cli("gui", write(tmp_path, sdxl=True, down_lr_weight=ONES_12), "-o", tmp_path / "run.toml")
    assert gui.code == 0, gui.err
    assert warning in gui.err
    plan = cli("plan", "--arch", "sdxl", "--unet_lr", "1e-4", "--network_args", f"down_lr_weight={ONES_12}")
    assert plan.code == 0, plan.err
    assert warning in plan.out


def test_a_network_args_pair_without_a_name_is_an_error(cli):
    result = cli("plan", "--arch", "sd1", "--network_args", "=1")
    assert result.code == 2, result.out
    assert "'=1'" in error_line(result)


def test_lycoris_values_are_checked_naming_the_arg(cli):
    pytest.importorskip("lycoris.kohya")
    base = ("plan", "--arch", "sd1", "--network_module", "lr_weights.lycoris", "--network_args", "algo=lokr")
    factor = cli(*base, "factor=abc")
    assert factor.code == 2
    line = error_line(factor)
    assert "factor='abc'" in line and "whole number" in line and "invalid literal" not in line
    tucker = cli(*base, "use_tucker=maybe")
    assert tucker.code == 2
    line = error_line(tucker)
    assert "use_tucker='maybe'" in line and "True or False" in line


def test_plan_without_lycoris_is_one_line_with_a_working_hint(cli, no_lycoris):
    result = cli("plan", "--arch", "sd1", "--network_module", "lr_weights.lycoris", "--network_args", "algo=lokr")
    assert result.code == 2
    line = error_line(result)
    assert "pip install lycoris-lora" in line and "lr-weights[lycoris]" not in line


@pytest.mark.parametrize("command", ["inspect", "bake"])
def test_inspect_and_bake_of_a_lycoris_file_without_lycoris_is_one_line(cli, no_lycoris, lokr_names_file, tmp_path, command):
    extra = ("--lbw", "ALL", "-o", tmp_path / "out.safetensors") if command == "bake" else ()
    result = cli(command, lokr_names_file, *extra)
    assert result.code == 2
    assert "pip install lycoris-lora" in error_line(result)


# ---- files: never overwritten by accident, modes kept ----------------------------------------


def test_demo_refuses_to_overwrite_without_overwrite(cli, tmp_path):
    existing = tmp_path / "existing.safetensors"
    existing.write_bytes(b"keep")
    result = cli("demo", "--steps", "1", "--output", existing)
    assert result.code == 2 and "--overwrite" in error_line(result)
    assert existing.read_bytes() == b"keep"


def test_demo_says_1_step_and_replaces_only_its_own_file(cli, tmp_path):
    result = cli("demo", "--steps", "1", "--output", tmp_path / "demo.safetensors")
    assert result.code == 0, result.err
    assert "trained 1 step " in result.out and "1 steps" not in result.out
    again = cli("demo", "--steps", "1", "--output", tmp_path / "demo.safetensors")  # `lr-weights demo` twice
    assert again.code == 0, again.err


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_bake_in_place_keeps_the_files_mode(cli, lora_file):
    os.chmod(lora_file, 0o600)
    result = cli("bake", lora_file, "--lbw", "ALL0.5", "--in-place")
    assert result.code == 0, result.err
    assert os.stat(lora_file).st_mode & 0o777 == 0o600


def test_bake_arch_of_another_layout_on_a_lycoris_file_is_an_error(cli, tmp_path, lokr_file):
    out = tmp_path / "out.safetensors"
    result = cli("bake", lokr_file, "--lbw", "ALL", "--arch", "sdxl", "-o", out)
    assert result.code == 2, result.out
    assert "sdxl" in error_line(result).lower() and not out.exists()


# ---- messages ----------------------------------------------------------------------------------


def test_gui_warns_about_network_module_only_when_it_differs(cli, tmp_path):
    for example in sorted(EXAMPLES.glob("gui-*.json")):
        result = cli("gui", example, "-o", tmp_path / f"{example.stem}.toml")
        assert result.code == 0 and "overrides" not in result.err, (example, result.err)
    other = cli("gui", write(tmp_path, additional_parameters="--network_module=networks.lora"), "-o", tmp_path / "other.toml")
    assert other.code == 0 and "--network_module=networks.lora" in other.err and "overrides" in other.err


def test_inspect_of_a_folder_says_it_is_a_folder(cli, tmp_path):
    result = cli("inspect", tmp_path)
    assert result.code == 2
    line = error_line(result)
    assert "folder" in line and "not found" not in line


def test_gui_of_a_missing_file_is_one_clear_line(cli, tmp_path):
    result = cli("gui", tmp_path / "missing.json")
    assert result.code == 2
    line = error_line(result)
    assert "missing.json" in line and "[Errno" not in line and "does not exist" in line


def test_version(capsys):
    from lr_weights import __version__
    from lr_weights.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"lr-weights {__version__}"


def test_help_and_docs_name_every_module(cli, capsys):
    from lr_weights.cli import main

    texts = {}
    for command in ("gui", "plan"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        texts[command] = capsys.readouterr().out.split("options:")[0]
    assert "lr_weights.lycoris" in texts["gui"]
    assert "lr_weights.lycoris" in texts["plan"] and "lr_weights.flux" in texts["plan"]
    cli_md = " ".join((ROOT / "docs" / "cli.md").read_text(encoding="utf-8").split())
    assert "LyCORIS types get a clear message" not in cli_md
    assert "lr_weights.lycoris" in cli_md[cli_md.index("### `gui`"):cli_md.index("### `inspect`")]

