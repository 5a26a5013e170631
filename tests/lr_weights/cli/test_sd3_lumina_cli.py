"""lr-weights plan / show / inspect / bake for SD3 (SD3.5 medium and large) and Lumina 2 (the Anima and HunyuanImage ones: test_dit_families_cli.py)."""

import json

import pytest
from safetensors.torch import save_file
import torch

from .test_plan import plan_json


@pytest.mark.parametrize("arch,blocks,t5", [("sd3", 24, 168), ("sd3-large", 38, 168)])
def test_sd3_plan_counts_and_groups(cli, arch, blocks, t5):
    _, plan = plan_json(cli, "--arch", arch, "--network_dim", "16", "--network_alpha", "16", "--unet_lr", "1e-4", "--network_args", "joint_lr_weight=sine", "train_t5xxl=True")
    rows = {r["name"]: r for r in plan["rows"]}
    # upstream's per-block counts (tests/fixtures/upstream/sd3/sd35_counts.json): CLIP-L 72, CLIP-G 192
    assert rows["CLIP-L"]["modules"] == 72 and rows["CLIP-G"]["modules"] == 192 and rows["T5XXL"]["modules"] == t5
    assert rows["J00"]["status"] == "pruned" and f"J{blocks - 1:02d}" in rows and f"J{blocks:02d}" not in rows
    assert rows[f"J{blocks - 1:02d}"]["modules"] == 7  # the last block's context block is pre_only
    groups = {g["description"]: g["lr"] for g in plan["groups"]}
    assert groups[f"unet J{blocks - 1:02d}"] == pytest.approx(1e-4)
    assert plan["network_module"] == "lr_weights.sd3"


def test_lumina_plan(cli):
    _, plan = plan_json(cli, "--arch", "lumina", "--network_dim", "16", "--unet_lr", "1e-4", "--network_args", "refiner_lr_weight=1,1,0.5,0", "split_qkv=True")
    rows = {r["name"]: r for r in plan["rows"]}
    assert rows["TE"]["modules"] == 182 and rows["C0"]["modules"] == 5 and rows["N0"]["modules"] == 6
    assert rows["N1"]["status"] == "pruned" and rows["L25"]["modules"] == 6 and rows["OUT"]["modules"] == 2
    assert plan["network_module"] == "lr_weights.lumina"


def test_module_of_another_family_is_refused(cli):
    result = cli("plan", "--arch", "lumina", "--network_module", "lr_weights.sd3")
    assert result.code == 2 and "lr_weights.lumina" in result.err


@pytest.mark.parametrize("prefix,blocks,arch", [("model.diffusion_model.joint_blocks", 38, "sd3-large"), ("joint_blocks", 24, "sd3"), ("noise_refiner", 2, "lumina")])
def test_architecture_from_a_checkpoint(cli, tmp_path, prefix, blocks, arch):
    path = tmp_path / "model.safetensors"
    save_file({f"{prefix}.{i}.x.weight": torch.zeros(1) for i in range(blocks)}, str(path))
    _, plan = plan_json(cli, "--model", path, "--unet_lr", "1e-4")
    assert plan["arch"] == arch


def test_show_lumina_and_sd3(cli):
    result = cli("show", "--arch", "lumina", "layer=linear", "refiner=1,1,.5,.5", "--format", "json")
    assert result.code == 0, result.err
    blocks = {b["block"]: b["weight"] for b in json.loads(result.out)["blocks"]}
    assert blocks["L00"] == 0 and blocks["L25"] == 1 and blocks["N0"] == 0.5
    result = cli("show", "--arch", "sd3-large", "joint=1,1")
    assert result.code == 2 and "38" in result.err


def saved_lora(tmp_path, family: str, model: str, args=None) -> str:
    from lr_weights import lumina, sd3
    from tests.dit_figures import Figures, create

    figures = Figures(family)
    if family == "sd3":
        spec = dict(figures.case("s01_plain"), model=model, network_args=args or {})
        network = create(sd3, spec, [figures.model(n) for n in ("tiny_te1", "tiny_te2", "tiny_te3")], figures.model(f"tiny_{model}"))
    else:
        network = create(lumina, dict(figures.case("l01_plain"), network_args=args or {}), [figures.model("tiny_gemma2")], figures.model("tiny_lumina2"))
    path = str(tmp_path / f"{model}.safetensors")
    network.save_weights(path, None, {})
    return path


@pytest.mark.parametrize("family,model,arch,last", [("sd3", "sd35m", "sd3", "J23"), ("sd3", "sd35l", "sd3-large", "J37"), ("lumina", "lumina2", "lumina", "L25")])
def test_inspect_reads_the_family_from_module_names(cli, tmp_path, family, model, arch, last):
    path = saved_lora(tmp_path, family, model, {"train_t5xxl": "True"} if family == "sd3" else None)
    result = cli("inspect", path, "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["arch"] == arch  # an SD3 file has lora_te1_/lora_te3_ like FLUX's: not read as FLUX
    rows = {r["block"]: r for r in summary["blocks"]}
    assert rows[last]["modules"] > 0


def test_inspect_refuses_relabelling_medium_as_large_and_bake_has_no_lbw_for_sd3(cli, tmp_path):
    path = saved_lora(tmp_path, "sd3", "sd35m")
    result = cli("inspect", path, "--arch", "sd3-large")
    assert result.code == 2 and "sd3's" in result.err
    result = cli("bake", path, "--lbw", "1,1", "-o", str(tmp_path / "baked.safetensors"))
    assert result.code == 2 and "LoRA Block Weight has none for SD3" in result.err and "joint_lr_weight" in result.err
