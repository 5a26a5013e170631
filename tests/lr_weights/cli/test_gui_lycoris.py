"""Kohya GUI configs of LyCORIS types convert to lr_weights.lycoris args that build a network."""

import json
from pathlib import Path

import pytest

pytest.importorskip("lycoris.kohya", reason="lycoris-lora is an optional extra (pip install lycoris-lora)")

from lr_weights import lycoris as ours  # noqa: E402
from lr_weights.archs.blocks import SD, block_index  # noqa: E402
from lr_weights.cli.gui_config import gui_to_sd_scripts  # noqa: E402
from lr_weights.cli.gui_lycoris import LYCORIS_GUI_TYPES  # noqa: E402
from lr_weights.models.tiny import build_tiny_sd  # noqa: E402

from tests.lr_weights.test_lycoris import shrunk_sdxl  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "fixtures" / "gui-configs"


def network_from(config, model):
    converted = gui_to_sd_scripts(config, "test")
    args = dict(a.split("=", 1) for a in converted.table["network_args"])
    text_encoder, unet = model
    return converted, ours.create_network(1.0, converted.table["network_dim"], converted.table["network_alpha"], None, text_encoder, unet, **args)


def test_lokr_config_with_block_fields_trains_per_block():
    config = json.loads((CONFIGS / "synthetic" / "lycoris-lokr-blocks.json").read_text())
    converted, network = network_from(config, build_tiny_sd(seed=0))
    assert converted.network_module == "lr_weights.lycoris"
    assert network.algo == "lokr" and network.options.block_lr_weights is not None
    weights = network.options.block_lr_weights
    pruned = [i for i, w in enumerate(weights) if w == 0 and i not in SD.moduleless]
    assert pruned  # sine+.25 is at or under 0.4 in IN01
    assert not [m for m in network.unet_loras if block_index(m.lora_name, SD) in pruned]


def test_ia3_sdxl_config_builds_with_9_3_9_weights(caplog):
    config = json.loads((CONFIGS / "synthetic" / "lycoris-ia3-sdxl-blocks.json").read_text())
    converted, network = network_from(config, shrunk_sdxl())
    assert converted.arch.is_sdxl and network.algo == "ia3"
    assert "train_on_input=True is passed by the Kohya GUI but lycoris.kohya does not read it" in caplog.text


@pytest.mark.parametrize("lora_type", sorted(LYCORIS_GUI_TYPES))
def test_every_lycoris_type_converts_to_args_lr_weights_lycoris_accepts(lora_type):
    config = {"LoRA_type": lora_type, "learning_rate": 1e-4, "network_dim": 8, "network_alpha": 4, "conv_dim": 4, "conv_alpha": 2, "LyCORIS_preset": "attn-mlp", "down_lr_weight": "1,1,1,1,1,1,1,1,1,1,1,0.5"}
    if lora_type == "LyCORIS/DyLoRA":
        config["unit"] = 4
    converted, network = network_from(config, build_tiny_sd(seed=0))
    assert converted.network_module == "lr_weights.lycoris" and network.all_loras
