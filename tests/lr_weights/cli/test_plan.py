"""lr-weights plan: the module's own network over sd-scripts' module trees on the meta device."""

import json

import pytest
import torch
from safetensors.torch import save_file

from .test_gui import CONFIGS


def plan_json(cli, *argv):
    result = cli("plan", "--json", *argv)
    assert result.code in (0, 1), result.err
    return result, json.loads(result.out)


def test_sd1_counts_match_upstream(cli):
    _, plan = plan_json(cli, "--arch", "sd1", "--unet_lr", "1e-4", "--text_encoder_lr", "5e-5")
    rows = {r["name"]: r for r in plan["rows"]}
    assert rows["TE"]["modules"] == 72
    assert sum(r["modules"] for r in plan["rows"] if r["name"] != "TE") == 192  # CONTRACT §2
    assert [g["description"] for g in plan["groups"]] == ["textencoder", "unet"]
    assert plan["file_bytes_fp16"] > 2 * plan["params"]


def test_block_lrs_groups_and_pruning(cli):
    result, plan = plan_json(
        cli, "--arch", "sd1", "--network_dim", "8", "--network_alpha", "4", "--unet_lr", "1e-4",
        "--network_args", "down_lr_weight=0,0,0,0,1,1,1,1,1,1,1,1", "mid_lr_weight=1", "up_lr_weight=1,1,1,1,1,1,1,1,1,1,1,0.5", "conv_dim=4",
    )
    assert result.code == 0
    rows = {r["name"]: r for r in plan["rows"]}
    assert rows["IN01"]["status"] == "pruned" and rows["IN01"]["modules"] == 0
    assert rows["OUT11"]["linear"] == "8/4" and rows["OUT11"]["conv"] == "4/1"
    groups = {g["description"]: g["lr"] for g in plan["groups"]}
    assert groups["unet_block24"] == pytest.approx(5e-5)
    assert "unet_block1" not in groups
    assert groups["textencoder"] == pytest.approx(2e-6)  # sd-scripts' default learning_rate
    assert any("learning_rate not given" in n for n in plan["notes"])


def test_text_table_has_totals_and_warnings(cli):
    result = cli("plan", "--arch", "sd1", "--unet_lr", "1e-4", "--network_args", "down_lr_weight=1,1", "up_lr_weight=sine")
    assert result.code == 0
    assert "unet lr" in result.out and "optimizer groups:" in result.out
    assert "file at fp16 about" in result.out
    assert "  - down_lr_weight has 2 values" in result.out  # the module's warning, shown in the plan
    assert "WARNING" not in result.err


def test_sdxl(cli):
    _, plan = plan_json(cli, "--arch", "sdxl", "--learning_rate", "1e-4", "--network_args", "mid_lr_weight=1,0,1")
    rows = {r["name"]: r for r in plan["rows"]}
    assert rows["TE"]["modules"] == 264
    # 722 U-Net modules (CONTRACT §2) less M01's 102 (the middle transformer), which weight 0 prunes.
    assert sum(r["modules"] for r in plan["rows"] if r["name"] != "TE") == 722 - 102
    assert rows["M01"]["status"] == "pruned"


def test_threshold_that_prunes_everything_fails(cli):
    result = cli("plan", "--network_args", "down_lr_weight=linear", "up_lr_weight=linear", "mid_lr_weight=0.5", "block_lr_zero_threshold=1")
    assert result.code == 1  # valid settings that train nothing: exit 1, as show and the docs say
    assert "nothing in the U-Net would train" in result.err


def test_no_learning_rate_trains_nothing(cli):
    result = cli("plan", "--learning_rate", "0", "--unet_lr", "0", "--text_encoder_lr", "0")
    assert result.code == 1
    assert "trains nothing" in result.err


def test_from_gui_config_and_its_toml(cli, tmp_path):
    name = CONFIGS / "synthetic" / "seed-v189-sine-cosine.json"
    from_gui = plan_json(cli, "--gui-config", name)[1]
    toml_path = tmp_path / "run.toml"
    assert cli("gui", name, "-o", toml_path).code == 0
    from_toml = plan_json(cli, "--config-file", toml_path)[1]
    assert from_gui["groups"] == from_toml["groups"]
    assert from_gui["network_dim"] == 32
    assert {g["description"] for g in from_gui["groups"]} >= {"textencoder", "unet_block1", "unet_block24"}


def test_dylora_from_gui_config(cli):
    result, plan = plan_json(cli, "--gui-config", CONFIGS / "synthetic" / "dylora-blocks-v21.7.7.json")
    assert plan["network_module"] == "lr_weights.dylora"
    assert result.code == 0


def test_architecture_from_a_checkpoint(cli, tmp_path):
    checkpoint = tmp_path / "xl.safetensors"
    save_file({"model.diffusion_model.label_emb.0.0.weight": torch.zeros(1), "conditioner.embedders.1.x": torch.zeros(1)}, str(checkpoint))
    _, plan = plan_json(cli, "--model", checkpoint, "--learning_rate", "1e-4")
    assert plan["arch"] == "sdxl"
    result = cli("plan", "--model", checkpoint, "--arch", "sd1")
    assert result.code == 2 and "xl.safetensors" in result.err
    not_a_model = tmp_path / "x.safetensors"
    not_a_model.write_bytes(b"garbage")
    result = cli("plan", "--model", not_a_model)
    assert result.code == 2 and "x.safetensors" in result.err and result.err.count("\n") == 1


def test_unknown_module(cli):
    result = cli("plan", "--network_module", "networks.oft")
    assert result.code == 2 and "lr_weights.lora, lr_weights.dylora or lr_weights.lycoris" in result.err


def test_no_learning_rate_note_when_both_rates_are_given(cli):
    both = cli("plan", "--arch", "sd1", "--unet_lr", "1e-4", "--text_encoder_lr", "5e-5")
    assert both.code == 0 and "learning_rate not given" not in both.out
    one = cli("plan", "--arch", "sd1", "--unet_lr", "1e-4")
    assert "learning_rate not given: sd-scripts' default 2e-06 applies to text_encoder_lr" in one.out


def test_alias_errors_blame_the_name_given(cli):
    result = cli("plan", "--arch", "sd1", "--network_args", "conv_dims=4")
    assert result.code == 2
    assert "conv_dims='4'" in result.err and "conv_block_dims" not in result.err.split("is not valid")[0]


def test_flux_dev_blocks_counts_and_groups(cli):
    result, plan = plan_json(
        cli, "--arch", "flux", "--network_dim", "16", "--network_alpha", "16", "--unet_lr", "1e-4",
        "--network_args", "double_lr_weight=sine+.25", "single_lr_weight=cosine", "block_lr_zero_threshold=0.3",
    )
    assert result.code == 0 and plan["network_module"] == "lr_weights.flux"
    rows = {r["name"]: r for r in plan["rows"]}
    # upstream lora_flux on FLUX.1-dev at dim 16 (flux_dev_counts.json): 10 modules / 2,260,992
    # params per double block, 3 / 884,736 per single block, CLIP-L 72 / 2,654,208
    assert rows["D01"]["modules"] == 10 and rows["D01"]["params"] == 2_260_992
    assert rows["S00"]["modules"] == 3 and rows["S00"]["params"] == 884_736
    assert rows["CLIP"]["modules"] == 72 and rows["CLIP"]["params"] == 2_654_208 and "T5" not in rows
    assert rows["D00"]["status"] == "pruned" and rows["S30"]["status"] == "pruned" and rows["S29"]["status"] == "train"
    assert [r["name"] for r in plan["rows"]][1:] == ["IN"] + [f"D{i:02d}" for i in range(19)] + [f"S{i:02d}" for i in range(38)] + ["OUT"]
    groups = {g["description"]: g["lr"] for g in plan["groups"]}
    assert groups["unet D18"] == pytest.approx(1.25e-4) and "unet D00" not in groups


def test_flux_module_and_arch_must_agree(cli):
    result = cli("plan", "--arch", "flux", "--network_module", "lr_weights.lora")
    assert result.code != 0 and "network_module" in result.err
