"""The Anima e2e harness's upstream spellings of block weights, checked against recorded upstream figures.

No sd-scripts needed: tests/fixtures/upstream/anima/cases/a20 and a22 hold upstream's own preset
expansions over 28 blocks / 6 adapter layers, the network_reg_lrs / exclude_patterns recorded
with them and the optimizer groups upstream built from them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from . import anima_harness as harness

CASES = Path(__file__).resolve().parent.parent / "fixtures" / "upstream" / "anima" / "cases"


def _case(slug):
    return json.loads((CASES / f"{slug}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("slug", ["a20_reg_lrs_block_weights", "a22_threshold_as_excludes"])
def test_presets_match_upstream_formulas(slug):
    weights = _case(slug)["block_weights"]
    assert harness.preset_weights(weights["block_spec"], harness.NUM_BLOCKS) == weights["block"]
    assert harness.preset_weights(weights["llm_adapter_spec"], harness.NUM_ADAPTER_LAYERS) == weights["llm_adapter"]


def _reg_lr_groups(case):
    """upstream's `unet reg_lr_<i>` group LRs, by regex index i (a group at LR 0 is dropped)."""
    return {int(g["description"].rsplit("_", 1)[1]): g["lr"] for g in case["result"]["groups"] if "reg_lr_" in g["description"]}


def test_reg_lrs_spelling_matches_recorded_case():
    case = _case("a20_reg_lrs_block_weights")
    w = case["block_weights"]
    # a20 keeps every block (its weight-0 block and layer train at LR 0): a threshold under every weight
    args = harness.upstream_block_lr_args(w["block"], w["llm_adapter"], case["unet_lr"], threshold=-1.0)
    assert args == ["network_reg_lrs=" + case["network_args"]["network_reg_lrs"]]
    # and upstream turned regex i into exactly unet_lr * w (blocks, then adapter layers)
    weights = w["block"] + w["llm_adapter"]
    assert _reg_lr_groups(case) == {i: case["unet_lr"] * x for i, x in enumerate(weights) if x != 0.0}


def test_threshold_spelling_matches_recorded_case():
    case = _case("a22_threshold_as_excludes")
    w = case["block_weights"]
    args = dict(a.split("=", 1) for a in harness.upstream_block_lr_args(w["block"], w["llm_adapter"], case["unet_lr"], w["threshold"]))
    assert args == {k: v for k, v in case["network_args"].items() if k != "train_llm_adapter"}
    kept = {(m["block_kind"], m["block_index"]) for m in case["result"]["modules"] if m["block_kind"] != "te"}
    assert {i for kind, i in kept if kind == "block"} == {i for i, x in enumerate(w["block"]) if x > w["threshold"]}
    assert {j for kind, j in kept if kind == "llm_adapter"} == {j for j, x in enumerate(w["llm_adapter"]) if x > w["threshold"]}
    kept_weights = [x for x in w["block"] + w["llm_adapter"] if x > w["threshold"]]
    assert _reg_lr_groups(case) == {i: case["unet_lr"] * x for i, x in enumerate(kept_weights)}


@pytest.mark.parametrize(
    "key, block",
    [
        ("lora_te_layers_1_mlp_gate_proj.alpha", "TE"),
        ("lora_unet_llm_adapter_blocks_5_cross_attn_q_proj.lora_down.weight", "A05"),
        ("lora_unet_blocks_27_mlp_layer2.lora_up.weight", "B27"),
        ("lora_unet_blocks_3_self_attn_output_proj.alpha", "B03"),
        ("lora_unet_t_embedder_1_linear_1.lora_down.weight", "OTHER"),
    ],
)
def test_block_label(key, block):
    assert harness.block_label(key) == block
