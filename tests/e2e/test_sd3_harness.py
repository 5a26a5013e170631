"""The SD3 e2e harness's upstream spelling of pruning block weights and its block labels, checked
against a recorded upstream case (no sd-scripts needed): tests/fixtures/upstream/sd3/cases/s60
holds the train_block_indices recorded for sine over 24 joint blocks with threshold 0.3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from . import sd3_harness as harness

CASES = Path(__file__).resolve().parent.parent / "fixtures" / "upstream" / "sd3" / "cases"


def test_kept_indices_match_recorded_case():
    case = json.loads((CASES / "s60_threshold_as_indices.json").read_text(encoding="utf-8"))
    weights = case["block_weights"]
    assert len(weights["joint"]) == harness.NUM_JOINT
    spelled = harness.kept_block_indices(weights["joint"], weights["threshold"])
    assert spelled == case["network_args"]["train_block_indices"]
    kept = {m["block_index"] for m in case["result"]["modules"] if m["block_kind"] == "joint"}
    assert kept == {int(i) for i in spelled.split(",")}


def test_kept_indices_default_threshold_and_none():
    assert harness.kept_block_indices([1.0, 0.0, 0.5]) == "0,2"  # block_lr_zero_threshold defaults to 0
    assert harness.kept_block_indices([0.0, 0.2], 0.3) == "none"


@pytest.mark.parametrize(
    "key, block",
    [
        ("lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha", "TE1"),
        ("lora_te2_text_model_encoder_layers_1_self_attn_q_proj.lora_down.weight", "TE2"),
        ("lora_te3_encoder_block_1_layer_0_SelfAttention_q.lora_down.weight", "TE3"),
        ("lora_unet_joint_blocks_10_x_block_attn2_qkv.lora_up.weight", "J10"),
        ("lora_unet_joint_blocks_3_context_block_mlp_fc1.alpha", "J03"),
        ("lora_unet_x_embedder_proj.lora_down.weight", "IN"),
        ("lora_unet_final_layer_linear.lora_up.weight", "OUT"),
    ],
)
def test_block_label(key, block):
    assert harness.block_label(key) == block
