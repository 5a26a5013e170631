"""lr-weights gui on every sample config: the TOML parses, and its network args are what the GUI
would have built for that LoRA type, with the module switched to lr_weights.

Expected args were derived by reading bmaltais/kohya_ss `lora_gui.py` (train_model) at the tag
named by each folder; see lr_weights/cli/gui_config.py for the rule. The order is the order of
train_model's parameters; only truthy fields are passed ("" and 0 are left out).
"""

import json
import tomllib
from pathlib import Path

import pytest

from lr_weights.cli.gui_config import gui_to_sd_scripts

CONFIGS = Path(__file__).resolve().parents[2] / "fixtures" / "gui-configs"

EXPECTED = {
    # v21.7.7, "Kohya DyLoRA" branch: conv_dim/conv_alpha/unit are in its field list.
    "synthetic/dylora-blocks-v21.7.7.json": (
        "lr_weights.dylora",
        ["conv_dim=16", "conv_alpha=8", "down_lr_weight=linear+0.5", "mid_lr_weight=1", "up_lr_weight=reverse_linear+0.5", "unit=4"],
    ),
    # v21.7.7, "Kohya LoCon": conv_dim/conv_alpha first, then the fields. The GUI wrote
    # conv_dims=/conv_alphas= (never read by sd-scripts); we pass them as conv_block_dims/alphas.
    "synthetic/locon-conv-dims-v21.7.7.json": (
        "lr_weights.lora",
        [
            "conv_dim=8",
            "conv_alpha=1",
            "block_dims=0,4,4,0,8,8,0,8,8,0,0,0,16,0,0,0,16,16,16,8,8,8,4,4,4",
            "block_alphas=" + ",".join(["1"] * 25),
            "conv_block_dims=0,2,2,0,4,4,0,4,4,0,0,0,8,0,0,0,8,8,8,4,4,4,2,2,2",
            "conv_block_alphas=" + ",".join(["1"] * 25),
        ],
    ),
    # v21.7.7, "Standard": only the non-empty block fields.
    "synthetic/seed-v186-constant.json": (
        "lr_weights.lora",
        ["down_lr_weight=0,0.5,1,0.5,0.5,0.5,0,1,1,0,0,0", "mid_lr_weight=1", "up_lr_weight=0.5,0.5,1,1,1,1,0.5,0.5,0.5,0.5,0,0.5"],
    ),
    "synthetic/seed-v189-sine-cosine.json": ("lr_weights.lora", ["down_lr_weight=sine+.25", "mid_lr_weight=1", "up_lr_weight=cosine+.25"]),
    # v21.7.7 preset without LoRA_type: the GUI default "Standard", no block fields -> no args.
    "v21.7.7/presets-lora-lion_optimizer.json": ("lr_weights.lora", []),
    # v21.8.4 SDXL "Standard": every block field "" and the dropouts 0.
    "v21.8.4/presets-lora-locon-dadaptation-sdxl.json": ("lr_weights.lora", []),
    # v24.0.0 "Standard": rank_dropout/module_dropout 0.1 are truthy.
    "v24.0.0/test-config-Standard-AdamW.json": ("lr_weights.lora", ["rank_dropout=0.1", "module_dropout=0.1"]),
    # v24.0.0 "Kohya LoCon": v24.0.0-v24.0.3 left out conv_dim/conv_alpha (a GUI bug, fixed in
    # v24.0.4); we keep LoCon a LoCon, as v21.x and v24.0.4+ build it.
    "v24.0.0/test-config-locon-AdamW.json": ("lr_weights.lora", ["conv_dim=16", "conv_alpha=8", "rank_dropout=0.1", "module_dropout=0.1"]),
    # v26.0.0 files without LoRA_type/network_dim: GUI defaults (Standard, dim 8, alpha 1).
    "v26.0.0/test-config-SDXL-Standard-AdamW.json": ("lr_weights.lora", []),
    "v26.0.0/test-config-Standard-AdamW.json": ("lr_weights.lora", []),
    "v26.0.0/test-config-locon-Adafactor.json": ("lr_weights.lora", ["conv_dim=16", "conv_alpha=8", "rank_dropout=0.1", "module_dropout=0.1"]),
}
LYCORIS = {  # LyCORIS types: the GUI's lycoris.kohya args (defaults filled in), then the block fields
    "v21.7.7/presets-lora-dadaptation.json": ["preset=full", "conv_dim=8", "conv_alpha=8", "use_tucker=False", "rank_dropout=0", "bypass_mode=False", "dora_wd=False", "module_dropout=0", "use_scalar=False", "rank_dropout_scale=False", "algo=loha", "train_norm=False"],
    "v24.0.0/test-config-DyLoRA-Adafactor-toml.json": ["preset=full", "conv_dim=64", "conv_alpha=64", "use_tucker=False", "block_size=1", "rank_dropout=0", "module_dropout=0", "algo=dylora", "train_norm=True"],
    "synthetic/lycoris-lokr-blocks.json": [
        "preset=full", "conv_dim=4", "conv_alpha=1", "use_tucker=False", "rank_dropout=0", "bypass_mode=False", "dora_wd=False", "module_dropout=0", "factor=8", "use_cp=False", "use_scalar=False",
        "decompose_both=False", "rank_dropout_scale=False", "algo=lokr", "train_norm=False", "down_lr_weight=sine+.25", "mid_lr_weight=1", "up_lr_weight=cosine+.25", "block_lr_zero_threshold=0.4",
    ],
    "synthetic/lycoris-ia3-sdxl-blocks.json": ["preset=ia3", "conv_dim=1", "conv_alpha=1", "train_on_input=True", "algo=ia3", "down_lr_weight=1,1,1,1,0,0,1,1,1", "mid_lr_weight=1,0.5,1", "up_lr_weight=0.5,0.5,0.5,1,1,1,1,1,1"],
}


def test_every_sample_config_is_covered():
    from .test_gui_dit_panels import FIXTURES as DIT_PANELS  # Flux.1, Anima, HunyuanImage-2.1: the same
    from .test_gui_sd3_lumina import FIXTURES  # SD3 and Lumina: checked against what the GUI wrote

    found = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.json")}
    assert found == set(EXPECTED) | set(LYCORIS) | set(FIXTURES) | set(DIT_PANELS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_toml_runs_the_config_with_lr_weights(cli, tmp_path, name):
    module, network_args = EXPECTED[name]
    out = tmp_path / "run.toml"
    result = cli("gui", CONFIGS / name, "-o", out)
    assert result.code == 0, result.err
    table = tomllib.loads(out.read_text(encoding="utf-8"))
    assert table["network_module"] == module
    assert table.get("network_args", []) == network_args
    config = json.loads((CONFIGS / name).read_text(encoding="utf-8"))
    assert table.get("pretrained_model_name_or_path") == (config.get("pretrained_model_name_or_path") or None)
    script = "sdxl_train_network.py" if config.get("sdxl") else "train_network.py"
    assert result.out.strip() == f"accelerate launch --num_cpu_threads_per_process=2 --mixed_precision={table['mixed_precision']} {script} --config_file {out}"
    # Deterministic: the same input gives the same bytes.
    again = tmp_path / "again.toml"
    cli("gui", CONFIGS / name, "-o", again)
    assert again.read_text().splitlines()[3:] == out.read_text().splitlines()[3:]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_print_args_line(cli, name):
    module, network_args = EXPECTED[name]
    result = cli("gui", CONFIGS / name, "--print-args")
    expected = f"--network_module={module}" + ("" if not network_args else " --network_args " + " ".join(f'"{a}"' for a in network_args))
    assert result.out.strip() == expected


@pytest.mark.parametrize("name", sorted(LYCORIS))
def test_lycoris_types_convert_to_lr_weights_lycoris(cli, tmp_path, name):
    out = tmp_path / "run.toml"
    result = cli("gui", CONFIGS / name, "-o", out)
    assert result.code == 0, result.err
    table = tomllib.loads(out.read_text(encoding="utf-8"))
    assert table["network_module"] == "lr_weights.lycoris"
    assert table["network_args"] == LYCORIS[name]
    assert "not used by lr_weights" not in result.err  # LyCORIS' own args are not ours to warn about


def test_learning_rates_follow_the_gui_rule():
    base = {"LoRA_type": "Standard", "learning_rate": 1e-4, "pretrained_model_name_or_path": "m"}
    both = gui_to_sd_scripts(dict(base, unet_lr=2e-4, text_encoder_lr=5e-5)).table
    assert (both["unet_lr"], both["text_encoder_lr"]) == (2e-4, 5e-5)
    unet_only = gui_to_sd_scripts(dict(base, unet_lr="2e-4", text_encoder_lr="0")).table
    assert unet_only["network_train_unet_only"] is True and "text_encoder_lr" not in unet_only


def write(tmp_path, **fields):
    config = {"LoRA_type": "Standard", "pretrained_model_name_or_path": "m", "learning_rate": 1e-4, "unet_lr": 1e-4, "text_encoder_lr": 5e-5}
    config.update(fields)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    return path


def test_spaces_are_stripped(cli, tmp_path):
    # v24+ GUIs split network_args on whitespace, so "1, 1" would reach sd-scripts as "1," and crash it.
    path = write(tmp_path, down_lr_weight="1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0.5", up_lr_weight=" cosine + .25")
    result = cli("gui", path, "--print-args")
    assert '"down_lr_weight=1,1,1,1,1,1,1,1,1,1,1,0.5"' in result.out and '"up_lr_weight=cosine+.25"' in result.out


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"down_lr_weight": "linear", "up_lr_weight": "linear", "mid_lr_weight": "0.2", "block_lr_zero_threshold": "1.5"}, "nothing in the U-Net would train"),
        ({"block_dims": "4,4,4"}, "exactly 25"),
        ({"sdxl": True, "block_dims": ",".join(["4"] * 25)}, "exactly 23"),
        ({"down_lr_weight": "sine+"}, "down_lr_weight"),
        ({"LoRA_type": "Kohya DyLoRA", "unit": 3, "network_dim": 8}, "unit=3"),
    ],
)
def test_problems_are_reported_before_anything_runs(cli, tmp_path, fields, fragment):
    out = tmp_path / "out.toml"
    result = cli("gui", write(tmp_path, **fields), "-o", out)
    assert result.code == (1 if "nothing" in fragment else 2)  # 1: valid settings that train nothing
    assert fragment in result.err and result.err.startswith("lr-weights gui: error: ")
    assert not out.exists()


def test_gui_defaults_fill_missing_keys(tmp_path):
    converted = gui_to_sd_scripts({"pretrained_model_name_or_path": "m", "learning_rate": 1e-4, "LoRA_type": "Kohya LoCon"})
    assert converted.network_args == [("conv_dim", "1"), ("conv_alpha", "1")]
    assert (converted.table["network_dim"], converted.table["network_alpha"]) == (8, 1)


def test_bad_files(cli, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = cli("gui", broken)
    assert result.code == 2 and "not valid JSON" in result.err and str(broken) in result.err
    missing = cli("gui", tmp_path / "missing.json")
    assert missing.code == 2 and "missing.json" in missing.err
    out = tmp_path / "exists.toml"
    out.write_text("keep")
    result = cli("gui", CONFIGS / "synthetic/seed-v189-sine-cosine.json", "-o", out)
    assert result.code == 2 and "--overwrite" in result.err and out.read_text() == "keep"


def test_a_json_that_is_no_gui_config_says_so(cli, tmp_path):
    package = tmp_path / "package.json"
    package.write_text('{"name": "x", "version": "1.0.0", "scripts": {"test": "jest"}}', encoding="utf-8")
    result = cli("gui", package)
    assert result.code == 2
    assert "is not a Kohya GUI config" in result.err and "LoRA_type" in result.err
    assert "learning_rate=None" not in result.err


def test_output_folder_and_sd_scripts_folder_are_checked_first(cli, tmp_path):
    name = sorted(EXPECTED)[0]
    missing = tmp_path / "missing" / "run.toml"
    result = cli("gui", CONFIGS / name, "-o", missing)
    assert result.code == 2 and f"-o='{missing}'" in result.err and "does not exist" in result.err
    result = cli("gui", CONFIGS / name, "--sd-scripts", tmp_path / "nonexistent")
    assert result.code == 2 and "--sd-scripts=" in result.err and "sd-scripts checkout" in result.err
    assert result.out == ""


def test_toml_is_written_by_the_toml_package(cli, tmp_path, monkeypatch):
    import toml

    calls = []
    real = toml.dumps
    monkeypatch.setattr(toml, "dumps", lambda table: calls.append(table) or real(table))
    out = tmp_path / "run.toml"
    assert cli("gui", CONFIGS / sorted(EXPECTED)[0], "-o", out).code == 0
    assert len(calls) == 1 and calls[0]["network_module"] == tomllib.loads(out.read_text(encoding="utf-8"))["network_module"]
