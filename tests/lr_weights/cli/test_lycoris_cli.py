"""lr-weights plan / inspect / bake / gui with lr_weights.lycoris and LyCORIS files."""

import json

import pytest
import torch

pytest.importorskip("lycoris.kohya", reason="lycoris-lora is an optional extra (pip install lycoris-lora)")

from safetensors.torch import load_file  # noqa: E402

from lr_weights.archs.blocks import SD, block_index  # noqa: E402
from lr_weights.args.lbw import parse_lbw  # noqa: E402

from .test_gui import CONFIGS  # noqa: E402


def plan_json(cli, *argv):
    result = cli("plan", "--json", *argv)
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_plan_lokr_with_block_lrs(cli):
    plan = plan_json(
        cli, "--arch", "sd1", "--network_module", "lr_weights.lycoris", "--unet_lr", "1e-4",
        "--network_args", "algo=lokr", "factor=8", "down_lr_weight=0,0,1,1,1,1,1,1,1,1,1,1", "mid_lr_weight=1", "up_lr_weight=1,1,1,1,1,1,1,1,1,1,1,0.5",
    )
    rows = {r["name"]: r for r in plan["rows"]}
    assert rows["IN01"]["status"] == "pruned" and rows["IN01"]["modules"] == 0 and rows["IN02"]["modules"] > 0
    assert rows["unknown"]["modules"] == 4  # conv_in, conv_out, time_embedding.linear_1/2 at weight 1
    groups = {g["description"]: g["lr"] for g in plan["groups"]}
    assert groups["unet_block24"] == pytest.approx(5e-5) and "unet_block1" not in groups
    assert sum(r["params"] for r in plan["rows"]) == plan["params"]
    assert plan["file_bytes_fp16"] > 2 * plan["params"]
    assert any("no known SD block" in w for w in plan["warnings"])


def test_plan_of_lycoris_kohya_default_does_not_crash(cli):
    plan = plan_json(cli, "--arch", "sd1", "--network_module", "lycoris.kohya", "--network_args", "algo=loha")
    assert plan["network_module"] == "lr_weights.lycoris" and plan["modules"] > 0


def test_plan_of_a_gui_lycoris_config(cli):
    plan = plan_json(cli, "--gui-config", CONFIGS / "synthetic" / "lycoris-lokr-blocks.json")
    assert plan["network_module"] == "lr_weights.lycoris"
    assert any(r["status"] == "pruned" for r in plan["rows"])


def test_inspect_lokr_file(cli, lokr_file):
    result = cli("inspect", lokr_file, "--json")
    assert result.code == 0, result.err
    document = json.loads(result.out)
    assert document["arch"] == "sd1" and set(document["algos"]) == {"kron"}
    assert all(m["exact"] and m["norm"] > 0 for m in document["modules"])
    assert [b["block"] for b in document["blocks"]][0] == "TE"
    text = cli("inspect", lokr_file)
    assert text.code == 0 and "LyCORIS modules" in text.out


def test_inspect_plot_of_a_lokr_file(cli, tmp_path, lokr_file):
    pytest.importorskip("matplotlib")
    from .conftest import png_size

    plot = tmp_path / "blocks.png"
    result = cli("inspect", lokr_file, "--plot", plot, "--plot-size", "800x300")
    assert result.code == 0, result.err
    assert png_size(plot) == (800, 300)


def test_bake_lokr_scales_one_factor_and_keeps_every_key(cli, tmp_path, lokr_file):
    output = tmp_path / "outd.safetensors"
    result = cli("bake", lokr_file, "--lbw", "OUTD", "-o", output)
    assert result.code == 0, result.err
    before, after = load_file(str(lokr_file)), load_file(str(output))
    assert {k: v.shape for k, v in after.items()} == {k: v.shape for k, v in before.items()}
    weights = parse_lbw(SD, "OUTD")
    for key, value in before.items():
        name, suffix = key.split(".", 1)
        w = weights.base if name.startswith("lora_te") else weights.blocks[block_index(name, SD)]
        if suffix in ("lokr_w1", "lokr_w1_a"):
            assert torch.equal(after[key], value * w)
        else:  # lokr_w2, alpha: never scaled
            assert torch.equal(after[key], value)
