"""`lr-weights gui` for Kohya GUI v26's DiT LoRA types: Flux1, Anima, HunyuanImage-2.1 (their
network_args built as lora_gui.py's train_model builds them, the module switched to ours, the
SD-shaped block panel reported instead of silently dropped)."""

from __future__ import annotations

import json

import pytest

BASE = {"network_dim": 16, "network_alpha": 16, "learning_rate": 1e-4, "unet_lr": 1e-4, "output_dir": "/out", "train_data_dir": "/data"}


def config(tmp_path, **fields):
    path = tmp_path / "gui.json"
    path.write_text(json.dumps(dict(BASE, **fields)), encoding="utf-8")
    return path


def test_flux1_fields_in_the_guis_order(cli, tmp_path):
    path = config(
        tmp_path, LoRA_type="Flux1", flux1_checkbox=True, img_attn_dim="8", txt_mod_dim="", in_dims="[4,0,0,0,4]",
        train_double_block_indices="0-5", train_lora_ggpo=True, ggpo_beta=0.01, ggpo_sigma=0.03, split_mode=True,
        split_qkv=True, train_t5xxl=True, rank_dropout=0.1, module_dropout=0, loraplus_unet_lr_ratio=16,
    )
    result = cli("gui", path, "--print-args")
    assert result.code == 0, result.err
    assert result.out.split() == [
        "--network_module=lr_weights.flux", "--network_args", '"img_attn_dim=8"', '"in_dims=[4,0,0,0,4]"', '"train_double_block_indices=0-5"',
        '"ggpo_beta=0.01"', '"ggpo_sigma=0.03"', '"train_blocks=single"', '"split_qkv=True"', '"train_t5xxl=True"', '"rank_dropout=0.1"',
        '"loraplus_unet_lr_ratio=16"',
    ]


@pytest.mark.parametrize(
    "lora_type,checkbox,module,script",
    [
        ("Anima", "anima_checkbox", "lr_weights.anima", "anima_train_network.py"),
        ("HunyuanImage-2.1", "hunyuan_image_checkbox", "lr_weights.hunyuan_image", "hunyuan_image_train_network.py"),
        ("Flux1", "flux1_checkbox", "lr_weights.flux", "flux_train_network.py"),
    ],
)
def test_dit_types_get_their_module_script_and_a_note_for_the_sd_block_panel(cli, tmp_path, lora_type, checkbox, module, script):
    path = config(tmp_path, LoRA_type=lora_type, down_lr_weight="sine", block_dims="2,2,2", module_dropout=0.25, **{checkbox: True})
    result = cli("gui", path)
    assert result.code == 0, result.err
    assert f'network_module = "{module}"' in result.out and f"{script} --config_file" in result.out
    assert 'network_args = [ "module_dropout=0.25",]' in result.out  # the panel's fields are not passed on
    assert "block panel has down_lr_weight=sine block_dims=2,2,2" in result.err and "does not read" in result.err


def test_a_bad_dit_field_is_refused_by_the_modules_parser(cli, tmp_path):
    result = cli("gui", config(tmp_path, LoRA_type="Flux1", train_double_block_indices="0-25"))
    assert result.code != 0 and "train_double_block_indices" in result.err and "0-25" in result.err
