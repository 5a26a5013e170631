"""The FLUX e2e harness's upstream spellings of block weights, checked against recorded upstream figures.

No sd-scripts needed: tests/fixtures/upstream/flux/cases/f30-f32 hold upstream's own preset
expansions over 19 / 38 blocks and the network_reg_lrs / block-index args recorded with them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from . import flux_harness as harness

CASES = Path(__file__).resolve().parent.parent / "fixtures" / "upstream" / "flux" / "cases"
UNET_LR = 1e-4  # the recorded cases' unet_lr


def _case(slug):
    return json.loads((CASES / f"{slug}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("slug", ["f30_reg_lrs_block_weights", "f31_reg_lrs_block_weights_loraplus", "f32_threshold_as_indices"])
def test_presets_match_upstream_formulas(slug):
    weights = _case(slug)["block_weights"]
    assert harness.preset_weights(weights["double_spec"], 19) == weights["double"]
    assert harness.preset_weights(weights["single_spec"], 38) == weights["single"]


def test_reg_lrs_spelling_matches_recorded_case():
    case = _case("f30_reg_lrs_block_weights")
    w = case["block_weights"]
    args = harness.upstream_block_lr_args(w["double"], w["single"], case["unet_lr"])
    assert args == ["network_reg_lrs=" + case["network_args"]["network_reg_lrs"]]
    # and upstream turned it into exactly unet_lr * w per block
    lrs = {g["description"]: g["lr"] for g in case["result"]["groups"]}
    blocks = w["double"] + w["single"]
    assert [lrs[f"unet reg_lr_{i}"] for i in range(len(blocks))] == [case["unet_lr"] * x for x in blocks]


def test_threshold_spelling_matches_recorded_case():
    case = _case("f32_threshold_as_indices")
    w = case["block_weights"]
    args = dict(a.split("=", 1) for a in harness.upstream_block_lr_args(w["double"], w["single"], UNET_LR, w["threshold"]))
    assert args["train_double_block_indices"] == case["network_args"]["train_double_block_indices"]
    assert args["train_single_block_indices"] == case["network_args"]["train_single_block_indices"]
    kept = {m["block_index"] for m in case["result"]["modules"] if m["block_kind"] == "double"}
    assert kept == {i for i, x in enumerate(w["double"]) if x > w["threshold"]}


@pytest.mark.parametrize(
    "key, block",
    [
        ("lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha", "CLIP"),
        ("lora_te3_encoder_block_1_layer_0_SelfAttention_q.lora_down.weight", "T5"),
        ("lora_unet_double_blocks_10_img_attn_qkv.lora_up.weight", "D10"),
        ("lora_unet_single_blocks_3_linear1.lora_down.weight", "S03"),
        ("lora_unet_time_in_in_layer.lora_down.weight", "IN"),
    ],
)
def test_block_label(key, block):
    assert harness.block_label(key) == block
