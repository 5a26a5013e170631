"""lr-weights inspect and bake on files written by lr_weights.lora and on hand-built upstream-named files."""

import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lr_weights import lora
from lr_weights.functional import delta_weight
from lr_weights.io import load_lora_file, read_metadata
from lr_weights.tiny import build_tiny_sd

from .conftest import png_size


@pytest.fixture
def trained(tmp_path):
    """A LoRA/LoCon file written by lr_weights.lora itself, with non-zero lora_up (as after training)."""
    text_encoder, unet = build_tiny_sd(seed=0)
    torch.manual_seed(0)
    network = lora.create_network(1.0, 4, 2, None, text_encoder, unet, conv_dim="2", down_lr_weight="sine+.25", mid_lr_weight="1", up_lr_weight="cosine+.25")
    with torch.no_grad():
        for module in network.all_loras:
            module.lora_up.weight.normal_(0, 0.1)
    path = tmp_path / "trained.safetensors"
    network.save_weights(str(path), torch.float16, {"ss_network_module": "lr_weights.lora", "ss_network_dim": "4"})
    return path


def upstream_sd1_file(path):
    """Key names exactly as sd-scripts' networks.lora writes them for SD1, built by hand."""
    torch.manual_seed(1)
    tensors = {}
    for name, (out_features, in_features) in {
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (768, 768),
        "lora_unet_down_blocks_0_attentions_0_proj_in": (320, 320),
        "lora_unet_down_blocks_2_attentions_1_transformer_blocks_0_attn2_to_k": (320, 768),
        "lora_unet_mid_block_attentions_0_proj_out": (64, 64),
        "lora_unet_up_blocks_3_attentions_2_proj_out": (320, 320),
    }.items():
        tensors[name + ".lora_down.weight"] = torch.randn(8, in_features) * 0.1
        tensors[name + ".lora_up.weight"] = torch.randn(out_features, 8) * 0.1
        tensors[name + ".alpha"] = torch.tensor(4.0)
    save_file(tensors, str(path), {"ss_network_module": "networks.lora", "ss_base_model_version": "sd_v1"})
    return tensors


def inspect_json(cli, path, *extra):
    result = cli("inspect", path, "--json", "--no-progress", *extra)
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_inspect_own_file(cli, trained):
    document = inspect_json(cli, trained)
    assert document["arch"] == "sd1" and document["dtypes"] == ["float16"]
    blocks = {b["block"]: b for b in document["blocks"]}
    assert blocks["IN01"]["dims"] == [2, 4] and blocks["IN01"]["alphas"] == [1.0, 2.0]  # LoCon conv dim 2 / alpha 1
    assert blocks["IN03"]["dims"] == [2]  # a downsampler: conv only
    assert document["training_blocks"][0]["name"] == "TE"
    # Norms: the streamed Gram formula equals the norm of the full ΔW.
    weights = load_lora_file(str(trained))
    module = next(m for m in document["modules"] if m["kind"] == "conv")
    name = module["name"]
    full = delta_weight(weights[name + ".lora_down.weight"], weights[name + ".lora_up.weight"], module["alpha"] / module["dim"]).norm().item()
    assert module["norm"] == pytest.approx(full, rel=1e-5)
    total = math.sqrt(sum(m["norm"] ** 2 for m in document["modules"] if m["block"] == blocks["IN01"]["index"] and m["is_unet"]))
    assert blocks["IN01"]["norm"] == pytest.approx(total)
    text = cli("inspect", trained, "--no-progress").out
    assert "architecture: sd1" in text and "ss_network_dim: 4" in text and "block table at training" in text


def test_inspect_upstream_file(cli, tmp_path):
    path = tmp_path / "upstream.safetensors"
    upstream_sd1_file(path)
    document = inspect_json(cli, path)
    assert document["arch"] == "sd1"
    assert [b["block"] for b in document["blocks"]] == ["TE", "IN01", "IN08", "M00", "OUT11"]
    assert document["training_blocks"] is None
    assert document["metadata"]["ss_network_module"] == "networks.lora"


def test_inspect_sdxl_names(cli, tmp_path):
    path = tmp_path / "xl.safetensors"
    tensors = {}
    for name in ("lora_te1_text_model_encoder_layers_0_mlp_fc1", "lora_te2_text_model_encoder_layers_0_mlp_fc1",
                 "lora_unet_input_blocks_4_1_proj_in", "lora_unet_middle_block_1_proj_in", "lora_unet_output_blocks_8_0_skip_connection"):
        tensors[name + ".lora_down.weight"] = torch.ones(2, 4)
        tensors[name + ".lora_up.weight"] = torch.ones(4, 2)
    save_file(tensors, str(path))
    document = inspect_json(cli, path)
    assert document["arch"] == "sdxl"
    assert [b["block"] for b in document["blocks"]] == ["TE1", "TE2", "IN04", "M01", "OUT08"]
    assert document["blocks"][2]["alphas"] == [2.0]  # no alpha tensor: alpha = dim
    assert document["blocks"][2]["norm"] == pytest.approx(8.0)  # up@down = 2 everywhere (4x4), scale 1


def test_inspect_plot(cli, trained, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "blocks.png"
    assert cli("inspect", trained, "--plot", png, "--plot-size", "640x320", "--no-progress").code == 0
    assert png_size(png) == (640, 320)


def test_bake_scales_norms_and_drops_zero_blocks(cli, trained, tmp_path):
    out = tmp_path / "baked.safetensors"
    vector = "0.5," + ",".join(["1"] * 7) + ",0,2,1,1,1,1,1,1,0.25"  # 17: BASE, IN01..M00 = 1, OUT03 = 0, OUT04 = 2, ..., OUT11 = 0.25
    result = cli("bake", trained, "--lbw", vector, "-o", out, "--no-progress")
    assert result.code == 0, result.err
    before = {b["block"]: b for b in inspect_json(cli, trained)["blocks"]}
    after = {b["block"]: b for b in inspect_json(cli, out)["blocks"]}
    assert "OUT03" not in after  # weight 0: tensors dropped
    assert after["OUT04"]["norm"] == pytest.approx(2 * before["OUT04"]["norm"], rel=2e-3)
    assert after["OUT11"]["norm"] == pytest.approx(0.25 * before["OUT11"]["norm"], rel=2e-3)
    assert after["TE"]["norm"] == pytest.approx(0.5 * before["TE"]["norm"], rel=2e-3)
    assert after["M00"]["norm"] == pytest.approx(before["M00"]["norm"], rel=1e-6)
    # The 17 layout does not name IN03/IN06/OUT00..OUT02 (LoCon-only blocks here): LBW gives them 0.
    assert "IN03" not in after and "OUT00" not in after
    metadata = read_metadata(str(out))
    assert metadata["lr_weights_baked_lbw"].split(",")[:2] == ["0.5", "0"]
    assert metadata["lr_weights_baked_from"].startswith("trained.safetensors")
    assert metadata["sshs_model_hash"] != read_metadata(str(trained))["sshs_model_hash"]
    with safe_open(str(out), framework="pt") as handle:
        assert all(k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in handle.keys())
        assert {handle.get_tensor(k).dtype for k in handle.keys()} == {torch.float16}


def test_bake_upstream_file_with_a_preset(cli, tmp_path):
    path = tmp_path / "upstream.safetensors"
    original = upstream_sd1_file(path)
    out = tmp_path / "outd.safetensors"
    assert cli("bake", path, "--lbw", "OUTD", "-o", out, "--no-progress").code == 0
    baked = load_lora_file(str(out))
    assert set(baked) == {k for k in original if k.startswith("lora_te_")}  # OUTD keeps BASE and OUT03-06
    assert torch.equal(baked["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"], original["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"])


def test_bake_never_overwrites_the_input_by_accident(cli, trained, tmp_path):
    before = trained.read_bytes()
    result = cli("bake", trained, "--lbw", "ALL0.5", "-o", trained)
    assert result.code == 2 and "--in-place" in result.err
    assert cli("bake", trained, "--lbw", "ALL0.5").code == 2
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"keep")
    assert cli("bake", trained, "--lbw", "ALL0.5", "-o", other).code == 2 and other.read_bytes() == b"keep"
    assert trained.read_bytes() == before
    assert cli("bake", trained, "--lbw", "ALL0.5", "--in-place", "--no-progress").code == 0
    assert read_metadata(str(trained))["lr_weights_baked_lbw"].startswith("0.5,0,0.5,0.5,0,")  # BASE, IN00 (unnamed by 17: 0), IN01, IN02, IN03


def test_bake_bad_vectors(cli, trained, tmp_path):
    out = tmp_path / "o.safetensors"
    result = cli("bake", trained, "--lbw", "1,1,1", "-o", out)
    assert result.code == 2 and "17 or 26" in result.err and not out.exists()
    result = cli("bake", trained, "--lbw", "NONE", "-o", out)
    assert result.code == 2 and "weight 0" in result.err and not out.exists()


@pytest.mark.parametrize("command", ["inspect", "bake"])
def test_bad_files_give_one_line_errors(cli, tmp_path, trained, command):
    extra = ["--lbw", "ALL", "-o", tmp_path / "out.safetensors"] if command == "bake" else []
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(trained.read_bytes()[:5000])
    text = tmp_path / "notes.safetensors"
    text.write_text("not a safetensors file")
    wrong = tmp_path / "wrong.safetensors"
    save_file({"model.diffusion_model.out.weight": torch.zeros(2)}, str(wrong))
    half = tmp_path / "half.safetensors"
    save_file({"lora_unet_mid_block_attentions_0_proj_out.lora_down.weight": torch.zeros(2, 2)}, str(half))
    for path, fragment in ((truncated, "not a readable safetensors"), (text, "not a readable safetensors"), (wrong, "no sd-scripts LoRA tensors"),
                           (half, "no lora_up"), (tmp_path / "missing.safetensors", "not found")):
        result = cli(command, path, *extra)
        assert result.code == 2, (path, result.err)
        assert result.err.count("\n") == 1 and result.err.startswith(f"lr-weights {command}: error: ")
        assert fragment in result.err and path.name in result.err


def test_inspect_arch_of_another_layout_is_an_error(cli, trained):
    result = cli("inspect", trained, "--arch", "sdxl", "--no-progress")
    assert result.code == 2
    assert "--arch='sdxl'" in result.err and "sd1's" in result.err
    assert cli("bake", trained, "--lbw", "ALL", "--arch", "sdxl", "-o", trained.parent / "x.safetensors").code == 2


def test_bake_without_output_names_the_option(cli, trained):
    result = cli("bake", trained, "--lbw", "OUTD")
    assert result.code == 2
    assert "-o OUT.safetensors" in result.err and "--in-place" in result.err


def test_missing_output_folders_fail_before_any_work(cli, trained, tmp_path, monkeypatch):
    from lr_weights import lora_file

    monkeypatch.setattr(lora_file, "bake", lambda *a, **k: pytest.fail("bake ran"))
    missing = tmp_path / "missing" / "out.safetensors"
    result = cli("bake", trained, "--lbw", "OUTD", "-o", missing)
    assert result.code == 2 and f"-o='{missing}'" in result.err
    monkeypatch.setattr(lora_file, "read_summary", lambda *a, **k: pytest.fail("inspect ran"))
    result = cli("inspect", trained, "--plot", tmp_path / "missing" / "p.png")
    assert result.code == 2 and "--plot=" in result.err and "does not exist" in result.err
