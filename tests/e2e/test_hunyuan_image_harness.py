"""The HunyuanImage e2e harness's upstream spellings of block weights, checked against recorded upstream cases.

No sd-scripts needed: tests/fixtures/upstream/hunyuan_image/cases/h10 and h12 hold upstream's own
preset expansions over 20 / 40 blocks, the network_reg_lrs / network_reg_dims args recorded with
them and what upstream built from them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from . import flux_harness
from . import hunyuan_image_harness as harness

CASES = Path(__file__).resolve().parent.parent / "fixtures" / "upstream" / "hunyuan_image" / "cases"


def _case(slug):
    return json.loads((CASES / f"{slug}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("slug", ["h10_reg_lrs_block_weights", "h12_threshold_as_reg_dims"])
def test_presets_over_this_family_match_upstream(slug):
    weights = _case(slug)["block_weights"]
    assert flux_harness.preset_weights(weights["double_spec"], harness.NUM_DOUBLE) == weights["double"]
    assert flux_harness.preset_weights(weights["single_spec"], harness.NUM_SINGLE) == weights["single"]


def test_reg_lrs_spelling_matches_recorded_case():
    case = _case("h10_reg_lrs_block_weights")
    w = case["block_weights"]
    args = harness.upstream_block_lr_args(w["double"], w["single"], case["unet_lr"])
    assert args == ["network_reg_lrs=" + case["network_args"]["network_reg_lrs"]]
    # and upstream turned it into exactly unet_lr * w per block (a block at 0 is in no group)
    lrs = {g["description"]: g["lr"] for g in case["result"]["groups"]}
    blocks = w["double"] + w["single"]
    assert [lrs.get(f"unet reg_lr_{i}") for i in range(len(blocks))] == [case["unet_lr"] * x if x else None for x in blocks]


def test_threshold_spelling_matches_recorded_case():
    case = _case("h12_threshold_as_reg_dims")
    w = case["block_weights"]
    args = dict(a.split("=", 1) for a in harness.upstream_block_lr_args(w["double"], w["single"], case["unet_lr"], threshold=w["threshold"]))
    assert args["network_reg_dims"] == case["network_args"]["network_reg_dims"]
    # upstream built no module in exactly the blocks at or under the threshold ...
    kept = {(m["block_kind"], m["block_index"]) for m in case["result"]["modules"]}
    expected = {("double", i) for i, x in enumerate(w["double"]) if x > w["threshold"]}
    expected |= {("single", i) for i, x in enumerate(w["single"]) if x > w["threshold"]}
    assert kept == expected
    # ... so the harness's LRs for those blocks (the recorded case leaves them out) reach no module
    ours = dict(pair.split("=") for pair in args["network_reg_lrs"].split(","))
    recorded = dict(pair.split("=") for pair in case["network_args"]["network_reg_lrs"].split(","))
    assert {k: v for k, v in ours.items() if k in recorded} == recorded
    pruned = {f"lora_unet_{kind}_blocks_{i}_" for kind in ("double", "single") for i in range(len(w[kind])) if (kind, i) not in kept}
    assert set(ours) - set(recorded) == pruned


def test_no_threshold_no_reg_dims():
    assert [a.split("=", 1)[0] for a in harness.upstream_block_lr_args([0.5] * 20, [1.0] * 40, 1e-3, threshold=0.3)] == ["network_reg_lrs"]


@pytest.mark.parametrize(
    "name, parts",
    [
        ("lora_unet_double_blocks_3_img_attn_qkv", 3),
        ("lora_unet_double_blocks_3_txt_attn_qkv", 3),
        ("lora_unet_double_blocks_3_img_attn_proj", 1),
        ("lora_unet_single_blocks_12_linear1", 4),
        ("lora_unet_single_blocks_12_linear2", 1),
    ],
)
def test_split_qkv_parts(name, parts):
    assert harness.split_qkv_parts(name) == parts
