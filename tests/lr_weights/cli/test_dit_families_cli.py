"""`lr-weights show / plan / inspect / bake --arch anima|hunyuan_image`: the new families through the
same commands as SD and FLUX (lr_weights/archs/anima.py, hunyuan_image.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lr_weights.files.io import load_lora_file

from tests.lr_weights.cli.test_inspect_bake import bake_rtol
from tests.lr_weights.test_dit_families_upstream_parity import FAMILIES

UPSTREAM = Path(__file__).resolve().parents[2] / "fixtures" / "upstream"


def test_show_anima_stacks_threshold_and_lrs(cli):
    # llm_adapter weights without train_llm_adapter are refused, as lr_weights.anima refuses them
    refused = cli("show", "--arch", "anima", "block=sine+.25", "llm_adapter=0.5")
    assert refused.code == 2 and "train_llm_adapter" in refused.err
    result = cli("show", "--arch", "anima", "block=sine+.25", "llm_adapter=0.5", "train_llm_adapter=true", "threshold=0.3", "--unet-lr", "1e-4", "--format", "json")
    assert result.code == 0, result.err
    rows = {r["block"]: r for r in json.loads(result.out)["blocks"]}
    assert rows["A03"]["weight"] == 0.5 and rows["B00"]["status"] == "pruned"  # sine starts at 0 + .25 <= 0.3
    assert rows["IN"]["status"] == "no modules" and rows["OUT"]["status"] == "no modules"  # upstream's default exclude
    assert rows["B27"]["lr"] == pytest.approx(1.25e-4)


def test_show_hunyuan_image_round_trips_to_network_args(cli):
    result = cli("show", "--arch", "hunyuan_image", "double=linear", "single=0.5", "--format", "sd-scripts")
    assert result.code == 0, result.err
    assert '"double_lr_weight=0,' in result.out and '"single_lr_weight=' in result.out
    bad = cli("show", "--arch", "hunyuan_image", "block=1")
    assert bad.code != 0 and "double_lr_weight, single_lr_weight" in bad.err


@pytest.mark.parametrize("family", ["anima", "hunyuan_image"])
def test_plan_on_the_real_model_equals_upstreams_counts(cli, family):
    recorded = json.loads((UPSTREAM / family / f"{family}_counts.json").read_text(encoding="utf-8"))["cases"]["plain"]
    result = cli("plan", "--arch", family, "--network_dim", "16", "--network_alpha", "16", "--unet_lr", "1e-4", "--json")
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert plan["modules"] == recorded["totals"]["modules"] and plan["params"] == recorded["totals"]["params"]
    assert plan["network_module"] == f"lr_weights.{family}"


def test_plan_refuses_another_familys_module(cli):
    result = cli("plan", "--arch", "anima", "--network_module", "networks.lora_flux")
    assert result.code != 0 and "lr_weights.anima trains anima" in result.err


def trained_file(tmp_path, family: str, args: dict) -> Path:
    figures = FAMILIES[family].figures
    network = figures.create(figures.case(figures.slugs[0]), args)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    path = tmp_path / f"{family}.safetensors"
    network.save_weights(str(path), None, {})
    return path


def inspected(cli, path) -> dict:
    result = cli("inspect", path, "--json", "--no-progress")
    assert result.code == 0, result.err
    return json.loads(result.out)


@pytest.mark.parametrize(
    "family,args,scaled,dropped",
    [
        # 37 values: TE, IN, A00..A05, B00..B27, OUT
        ("anima", {"train_llm_adapter": "true"}, {"A02": 0.5, "B05": 2.0, "TE": 0.5}, "B03"),
        # 60 values: D00..D19, S00..S39
        ("hunyuan_image", {}, {"D02": 0.5, "S05": 2.0}, "D03"),
    ],
)
def test_inspect_reads_the_family_and_bake_scales_its_blocks(cli, tmp_path, family, args, scaled, dropped):
    from lr_weights.archs import get_architecture

    path = trained_file(tmp_path, family, args)
    document = inspected(cli, path)
    assert document["arch"] == family
    before = {b["block"]: b for b in document["blocks"]}
    form = get_architecture(family).lbw.forms[0]
    weights = {name: 1.0 for name in form}
    weights.update(scaled)
    weights[dropped] = 0.0
    out = tmp_path / "baked.safetensors"
    result = cli("bake", path, "--lbw", ",".join(f"{weights[name]:g}" for name in form), "-o", out, "--no-progress")
    assert result.code == 0, result.err
    after = {b["block"]: b for b in inspected(cli, out)["blocks"]}
    assert dropped not in after
    weights_before = load_lora_file(str(path))
    for block, factor in scaled.items():
        in_block = (lambda m: not m["is_unet"]) if block == "TE" else (lambda m: m["is_unet"] and m["block"] == before[block]["index"])
        names = [m["name"] for m in document["modules"] if in_block(m)]
        rtol = max(bake_rtol(weights_before, name, factor, torch.float32) for name in names)
        assert after[block]["norm"] == pytest.approx(factor * before[block]["norm"], rel=rtol), block
        assert after[block]["norm"] != pytest.approx(factor**2 * before[block]["norm"], rel=rtol), block
