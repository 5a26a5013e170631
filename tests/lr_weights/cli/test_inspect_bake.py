"""lr-weights inspect and bake on files written by lr_weights.lora and on hand-built upstream-named files."""

import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lr_weights import lora
from lr_weights.adapters.functional import delta_weight
from lr_weights.files.io import load_lora_file, read_metadata
from lr_weights.models.tiny import build_tiny_sd

from tests.tolerances import fp_tolerance
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


def _rank_factors(weights, name):
    down = weights[name + ".lora_down.weight"].double()
    up = weights[name + ".lora_up.weight"].double()
    return up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1)


def _kappa(up, down):
    """‖|up|·|down|‖ / ‖up·down‖: an element's rounding is relative to |up|·|down|, not to ΔW."""
    return float((up.abs() @ down.abs()).norm() / (up @ down).norm())


def gram_rtol(up, down):
    """Relative error bound of one float32 evaluation of ‖up·down‖² in inspect's Gram form (tests/tolerances.py):
    upᵀup and down·downᵀ sum O and I products, then r² of their products are summed; on absolute
    values that chain is ‖|up|·|down|‖², hence κ². (The square root only halves it; not counted.)"""
    (o, r), i = up.shape, down.shape[1]
    return fp_tolerance(torch.float32, o + i + r * r + 1, _kappa(up, down) ** 2) / 2


def norm_rtol(weights, name):
    """Gram form against ‖ΔW‖ of the full ΔW in float32: the full form rounds each element of ΔW (r
    products: γ_r·κ on the norm, twice on its square) and sums O·I positive squares (γ_{O·I+1})."""
    up, down = _rank_factors(weights, name)
    (o, r), i = up.shape, down.shape[1]
    full = fp_tolerance(torch.float32, o * i + 1) / 2 + fp_tolerance(torch.float32, r, _kappa(up, down))
    return gram_rtol(up, down) + full


def bake_rtol(weights, name, factor, dtype=torch.float16):
    """Relative bound on ‖ΔW‖ after bake against factor·‖ΔW‖ before. Bake rounds factor·up to the
    file's dtype once per element: half an ulp, u·|factor·up| (zero for a power of two), or half the
    subnormal spacing where factor·up falls below the normal range; that error E in up moves ‖ΔW‖ by
    at most ‖|E|·|down|‖. Then each file's norm is one Gram evaluation (`gram_rtol`)."""
    up, down = _rank_factors(weights, name)
    half = torch.finfo(dtype)
    norm = float((up @ down).norm()) * factor
    error = (half.eps / 2 * factor * up.abs() + half.tiny * half.eps / 2) @ down.abs()
    return float(error.norm()) / norm + 2 * gram_rtol(up, down)


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
    assert module["norm"] == pytest.approx(full, rel=norm_rtol(weights, name))
    in01 = [m["norm"] for m in document["modules"] if m["block"] == blocks["IN01"]["index"] and m["is_unet"]]
    total = math.sqrt(sum(n**2 for n in in01))
    # The same float64 sum of squares and square root, perhaps in another order.
    assert blocks["IN01"]["norm"] == pytest.approx(total, rel=fp_tolerance(torch.float64, len(in01) + 2))
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
    assert document["blocks"][2]["norm"] == 8.0  # up@down = 2 everywhere (4x4), scale 1: small integers, exact


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
    weights = load_lora_file(str(trained))
    modules = inspect_json(cli, trained)["modules"]
    for block, factor in (("OUT04", 2.0), ("OUT11", 0.25), ("TE", 0.5)):
        in_block = (lambda m: not m["is_unet"]) if block == "TE" else (lambda m: m["is_unet"] and m["block"] == before[block]["index"])
        names = [m["name"] for m in modules if in_block(m)]
        rtol = max(bake_rtol(weights, name, factor) for name in names)
        assert after[block]["norm"] == pytest.approx(factor * before[block]["norm"], rel=rtol), block
        # It can fail: the weight applied to both up and down (factor²) is far outside.
        assert after[block]["norm"] != pytest.approx(factor**2 * before[block]["norm"], rel=rtol), block
    assert after["M00"]["norm"] == before["M00"]["norm"]  # weight 1: the same tensors, the same arithmetic
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
    from lr_weights.files import lora_file
    monkeypatch.setattr(lora_file, "bake", lambda *a, **k: pytest.fail("bake ran"))
    missing = tmp_path / "missing" / "out.safetensors"
    result = cli("bake", trained, "--lbw", "OUTD", "-o", missing)
    assert result.code == 2 and f"-o='{missing}'" in result.err
    monkeypatch.setattr(lora_file, "read_summary", lambda *a, **k: pytest.fail("inspect ran"))
    result = cli("inspect", trained, "--plot", tmp_path / "missing" / "p.png")
    assert result.code == 2 and "--plot=" in result.err and "does not exist" in result.err


@pytest.fixture
def flux_file(tmp_path):
    import torch

    from lr_weights import flux as lora_flux
    from lr_weights.models.tiny_flux import build_tiny_flux

    encoders, model = build_tiny_flux()
    torch.manual_seed(0)
    network = lora_flux.create_network(1.0, 4, 2, None, encoders, model, train_t5xxl="True")
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            parameter.normal_()
    path = tmp_path / "flux.safetensors"
    network.save_weights(str(path), None, {})
    return path


def test_inspect_and_bake_flux(cli, flux_file, tmp_path):
    document = inspect_json(cli, flux_file)
    rows = {r["block"]: r for r in document["blocks"]}
    assert document["arch"] == "flux" and rows["D00"]["modules"] == 10 and rows["S37"]["modules"] == 3
    assert rows["TE1"]["modules"] == 12 and rows["TE3"]["modules"] == 14
    vector = ",".join(["1", "0", "1"] + ["0.5"] * 19 + ["0"] * 38 + ["1"])
    out = tmp_path / "baked.safetensors"
    result = cli("bake", flux_file, "--lbw", vector, "-o", out, "--no-progress")
    assert result.code == 0, result.err
    baked = {r["block"]: r for r in inspect_json(cli, out)["blocks"]}
    # T5 and every single block dropped; double blocks at half their change
    assert "TE3" not in baked and not any(name.startswith("S") for name in baked)
    # float32 file: bake_rtol with float32's rounding, the worst module of the block (as above)
    weights = load_lora_file(str(flux_file))
    names = [m["name"] for m in document["modules"] if m["is_unet"] and m["block"] == rows["D03"]["index"]]
    assert len(names) == 10 and all(weights[n + ".lora_up.weight"].dtype == torch.float32 for n in names)
    rtol = max(bake_rtol(weights, name, 0.5, torch.float32) for name in names)
    assert baked["D03"]["norm"] == pytest.approx(0.5 * rows["D03"]["norm"], rel=rtol)
    assert baked["D03"]["norm"] != pytest.approx(0.5 * 1.01 * rows["D03"]["norm"], rel=rtol)  # a 1 % error fails
    assert cli("bake", flux_file, "--lbw", "OUTD", "-o", tmp_path / "x.safetensors", "--no-progress").code != 0


def test_inspect_and_bake_diffusers_named_flux(cli, tmp_path):
    """ai-toolkit / diffusers FLUX files: transformer.transformer_blocks.N / single_transformer_blocks.N,
    lora_A (down) / lora_B (up), no alpha (alpha = rank)."""
    import torch
    from safetensors.torch import load_file, save_file

    g = torch.Generator().manual_seed(0)
    tensors = {}
    for name in ("transformer.transformer_blocks.0.attn.to_q", "transformer.transformer_blocks.18.ff.net.2", "transformer.single_transformer_blocks.5.proj_out"):
        tensors[name + ".lora_A.weight"] = torch.randn(4, 16, generator=g)
        tensors[name + ".lora_B.weight"] = torch.randn(16, 4, generator=g)
    path = tmp_path / "aitk.safetensors"
    save_file(tensors, str(path))
    rows = {r["block"]: r for r in inspect_json(cli, path)["blocks"]}
    assert set(rows) == {"D00", "D18", "S05"} and rows["D00"]["dims"] == [4] and rows["D00"]["alphas"] == [4.0]
    vector = ",".join(["1", "1", "1"] + ["0.5"] * 19 + ["0"] * 38 + ["1"])
    out = tmp_path / "baked.safetensors"
    assert cli("bake", path, "--lbw", vector, "-o", out, "--no-progress").code == 0
    baked = load_file(str(out))
    assert set(baked) == {k for k in tensors if "single" not in k}
    key = "transformer.transformer_blocks.0.attn.to_q.lora_B.weight"
    assert torch.equal(baked[key], tensors[key] * 0.5)
    assert torch.equal(baked[key.replace("lora_B", "lora_A")], tensors[key.replace("lora_B", "lora_A")])
