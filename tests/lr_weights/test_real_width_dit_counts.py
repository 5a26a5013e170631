"""Anima and HunyuanImage-2.1 at their real widths: our networks on the recorded meta skeletons
(lr_weights/models/data/anima*.json, hunyuan_image.json) build, per block, the modules and LoRA
parameters upstream builds on the real models (tests/fixtures/upstream/<family>/<family>_counts.json,
dim 16). Nothing is allocated: the base layers are on meta and the adapters' init is skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lr_weights import anima, hunyuan_image
from lr_weights.archs import ANIMA, HUNYUAN_IMAGE
from lr_weights.models.reference import build_reference_model, skipped_weight_init

UPSTREAM = Path(__file__).resolve().parents[1] / "fixtures" / "upstream"
FAMILIES = {"anima": (anima, ANIMA), "hunyuan_image": (hunyuan_image, HUNYUAN_IMAGE)}


def counts(family: str) -> dict:
    return json.loads((UPSTREAM / family / f"{family}_counts.json").read_text(encoding="utf-8"))


def label(arch, lora_name: str) -> str:
    """The recorders' block labels: te, x_embedder / t_embedder / final_layer, A00, B07, D03, S12."""
    if lora_name.startswith("lora_te"):
        return "te"
    block = arch.block_name(arch.locate(lora_name))
    if block in ("IN", "OUT"):
        return "_".join(lora_name.split("_")[2:4])  # lora_unet_x_embedder_... -> x_embedder
    return block


CASES = [(family, case) for family in FAMILIES for case in counts(family)["cases"]]


@pytest.mark.parametrize("family,case", CASES, ids=[f"{f}-{c}" for f, c in CASES])
def test_modules_and_params_per_block_equal_upstreams(family, case):
    entry_point, arch = FAMILIES[family]
    recorded = counts(family)["cases"][case]
    encoders, model = build_reference_model(family)
    with skipped_weight_init(), torch.device("meta"):
        network = entry_point.create_network(1.0, recorded["network_dim"], recorded["network_alpha"], None, encoders, model, **recorded["network_args"])
    per_block = {}
    for module in network.text_encoder_loras + network.unet_loras:
        slot = per_block.setdefault(label(arch, module.lora_name), {"modules": 0, "params": 0})
        slot["modules"] += 1
        slot["params"] += sum(p.numel() for p in module.parameters())
    want = {k: v for k, v in recorded["per_block"].items() if v["modules"]}
    assert per_block == want
    if "module_names_in_order" in recorded:
        assert [m.lora_name for m in network.text_encoder_loras + network.unet_loras] == recorded["module_names_in_order"]


def test_locators_name_every_upstream_module_of_a_block():
    """Every DiT module name upstream made on the real models is located in the block its name says."""
    for family, (_, arch) in FAMILIES.items():
        for name in counts(family)["cases"]["plain"]["module_names_in_order"]:
            if not name.startswith("lora_te"):
                assert arch.locate(name) >= 0, name
    assert ANIMA.block_name(ANIMA.locate("lora_unet_blocks_27_mlp_layer2")) == "B27"
    assert ANIMA.block_name(ANIMA.locate("lora_unet_llm_adapter_blocks_5_cross_attn_o_proj")) == "A05"
    assert ANIMA.block_name(ANIMA.locate("lora_unet_t_embedder_1_linear_1")) == "IN"
    assert ANIMA.block_name(ANIMA.locate("lora_unet_final_layer_adaln_modulation_2")) == "OUT"
    assert ANIMA.locate("lora_unet_blocks_28_mlp_layer1") == -1 and ANIMA.locate("lora_te_layers_0_mlp_up_proj") == -1
    assert HUNYUAN_IMAGE.block_name(HUNYUAN_IMAGE.locate("lora_unet_double_blocks_19_txt_mlp_fc2")) == "D19"
    assert HUNYUAN_IMAGE.block_name(HUNYUAN_IMAGE.locate("lora_unet_single_blocks_0_linear1")) == "S00"
    assert HUNYUAN_IMAGE.locate("lora_unet_single_blocks_40_linear1") == -1
