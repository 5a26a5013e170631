"""Inspect and bake of LyCORIS files against ΔW measured independently of lycoris-lora's diff code.

The independent ΔW of a Linear layer is what its patched forward adds: feed the identity matrix
and subtract the base layer's output (y = x Wᵀ + b, so patched(I) - base(I) = ΔWᵀ). This sees
only the forward pass that trained the file, none of lycoris-lora's get_diff_weight code.
Tolerances (tests/tolerances.py): every ΔW here is a multilinear formula in the stored tensors
(and, for IA3/GLoRA, the base weight), so its rounding bound's scale is the same formula on absolute
values, M = |ΔW| of the file with every tensor replaced by its absolute value, over a base model
with absolute weights, measured by the same probe (`magnitudes`). n counts the roundings along a
formula: at most two rank-r products (LoHa) and 8 elementwise steps (their product, alpha/dim,
scale, scalar, multiplier, conversions). The float64 probe itself rounds relative to |W| + |b| + M.
"""

import pytest
import torch

pytest.importorskip("lycoris.kohya", reason="lycoris-lora is an optional extra (pip install lycoris-lora)")

from lycoris.modules import get_module, make_module  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from lr_weights import lycoris as ours  # noqa: E402
from lr_weights.archs.blocks import SD, SDXL, block_index  # noqa: E402
from lr_weights.errors import NetworkArgError  # noqa: E402
from lr_weights.args.lbw import parse_lbw  # noqa: E402
from lr_weights.files.lycoris_file import bake_lycoris, is_lycoris_file, model_layers, read_lycoris_summary  # noqa: E402
from lr_weights.models.tiny import build_tiny_sd  # noqa: E402

from tests.tolerances import assert_within, fp_tolerance  # noqa: E402
from tests.lr_weights.test_lycoris import build, perturb, shrunk_sdxl  # noqa: E402

ALGOS = [("lokr", {"factor": "4"}), ("loha", {}), ("locon", {}), ("full", {}), ("ia3", {}), ("glora", {})]
VECTOR = "0.5,0,1,0.25,1,2,1,1,0.75,0,1,1,1,0.5,1,1,1"  # LBW 17: BASE, IN01..OUT11
RANK = 4  # test_lycoris.build's dim
DELTA_ROUNDINGS = 2 * RANK + 8  # per ΔW element, see the module docstring


def probe_deltas(network):
    """name -> ΔW of every Linear module, from the patched forward alone, in float64 (so W + ΔW - W
    loses nothing: ΔW is 1e-3 of W here, and float32 would leave 1e-4 relative noise)."""
    deltas = {}
    network.double()
    with torch.no_grad():
        for module in network.all_loras:
            layer = module.org_module[0].double()
            if not isinstance(layer, torch.nn.Linear):
                continue

            def added(x):
                if hasattr(module, "_org_weight"):  # full: the applied module took the layer's weight over
                    bias = module.org_bias[0].double() if module.org_bias else None
                    base = torch.nn.functional.linear(x, module._org_weight[0].double(), bias)
                else:
                    base = module.org_forward(x)
                return layer(x) - base

            eye = torch.eye(layer.in_features, dtype=torch.float64)
            # patched(I) - base(I) = ΔWᵀ + Δb; the zero input removes Δb (full trains the bias too)
            deltas[module.lora_name] = (added(eye) - added(torch.zeros(1, layer.in_features, dtype=torch.float64))).T.clone()
    return deltas


def trained_file(tmp_path, algo, extra, name="in", probe=True):
    network, text_encoder, unet = build(ours, algo=algo, preset="attn-mlp", **extra)
    perturb(network, seed=4)
    network.eval()
    path = tmp_path / f"{name}_{algo}.safetensors"
    network.save_weights(str(path), None, {"ss_note": "test"})
    return path, probe_deltas(network) if probe else None


def loaded_deltas(path, absolute=False):
    """probe_deltas of the file loaded onto the tiny SD; `absolute`: every base weight and bias made
    non-negative (the file's tensors must be too): then ΔW is the formula on absolute values."""
    text_encoder, unet = build_tiny_sd(seed=0)
    if absolute:
        with torch.no_grad():
            for p in list(text_encoder.parameters()) + list(unet.parameters()):
                p.abs_()
    network, _ = ours.create_network_from_weights(1.0, str(path), None, text_encoder, unet)
    network.apply_to(text_encoder, unet, True, True)
    network.eval()
    return probe_deltas(network)


def magnitudes(path, tmp_path):
    """name -> M, the scale of the rounding bound of ΔW (module docstring); its own float64 rounding
    is ~1e-16 relative, immaterial for a tolerance's scale. `full` stores ΔW itself: M = |diff|
    (its probe would round |W| + |diff| in float32, see the bake test)."""
    tensors = load_file(str(path))
    absolute = tmp_path / ("abs_" + path.name)
    save_file({k: v.abs() for k, v in tensors.items()}, str(absolute))
    probed = loaded_deltas(absolute, absolute=True)
    return {name: tensors[name + ".diff"].double().abs() if name + ".diff" in tensors else m for name, m in probed.items()}


def probe_rounding(layer, magnitude):
    """Elementwise bound on a float64 probe's error: patched(I) - base(I) and the same at 0 each sum
    in_features products plus the adapter's formula, then subtract (tests/tolerances.py)."""
    scale = layer.weight.detach().double().abs() + magnitude
    if layer.bias is not None:
        scale = scale + layer.bias.detach().double().abs()[:, None]
    return 2 * fp_tolerance(torch.float64, layer.in_features + DELTA_ROUNDINGS + 2, scale)


@pytest.mark.parametrize("algo,extra", ALGOS[:4], ids=[a for a, _ in ALGOS[:4]])
def test_inspect_norms_equal_the_forward_delta(tmp_path, algo, extra):
    path, deltas = trained_file(tmp_path, algo, extra)
    text_encoder, unet = build_tiny_sd(seed=0)
    summary = read_lycoris_summary(str(path), model="sd1", layers=model_layers(text_encoder, unet))
    by_name = {m.name: m for m in summary.modules}
    assert set(by_name) == {k.split(".", 1)[0] for k in load_file(str(path))}
    bounds, layers = magnitudes(path, tmp_path), model_layers(*build_tiny_sd(seed=0))
    for name, delta in deltas.items():
        assert by_name[name].exact
        # inspect: ΔW in float32 (γ_n·M per element), then its norm (N squares, a sum, a square
        # root: γ_{N+2} relative); the float64 probe: probe_rounding. The norm moves by at most the
        # norm of the elementwise errors.
        probe_error = float(probe_rounding(layers[name], bounds[name]).norm())
        exact_norm = float(delta.norm()) + probe_error
        bound = float(fp_tolerance(torch.float32, DELTA_ROUNDINGS, bounds[name]).norm()) + fp_tolerance(torch.float32, delta.numel() + 2) * exact_norm + probe_error
        assert by_name[name].norm == pytest.approx(float(delta.norm()), rel=0, abs=bound), name
        assert by_name[name].norm * 1.01 != pytest.approx(float(delta.norm()), rel=0, abs=bound), name  # a 1 % error fails
    rows = summary.block_rows()
    assert rows[0]["block"] == "TE" and any(r["block"] == "M00" for r in rows)


def test_inspect_marks_base_dependent_algorithms(tmp_path):
    path, _ = trained_file(tmp_path, "ia3", {})
    text_encoder, unet = build_tiny_sd(seed=0)
    summary = read_lycoris_summary(str(path), model="sd1", layers=model_layers(text_encoder, unet))
    assert summary.modules and not any(m.exact for m in summary.modules)


@pytest.mark.parametrize("algo,extra", ALGOS, ids=[a for a, _ in ALGOS])
def test_bake_scales_delta_w_exactly_and_keeps_every_key(tmp_path, algo, extra):
    path, before = trained_file(tmp_path, algo, extra)
    output = tmp_path / f"baked_{algo}.safetensors"
    result = bake_lycoris(str(path), str(output), VECTOR, model="sd1")
    original, baked = load_file(str(path)), load_file(str(output))
    assert list(baked) == list(original)
    assert all(baked[k].shape == original[k].shape and baked[k].dtype == original[k].dtype for k in original)
    assert is_lycoris_file(baked) or algo == "locon"
    weights = parse_lbw(SD, VECTOR)
    after = loaded_deltas(output)
    assert set(after) == set(before)
    bounds, layers = magnitudes(path, tmp_path), model_layers(*build_tiny_sd(seed=0))
    for name, delta in before.items():
        w = weights.base if not name.startswith("lora_unet") else (weights.blocks[block_index(name, SD)] if block_index(name, SD) >= 0 else 1.0)
        # Bake rounds w·factor to float32 once per element (relative u₃₂); ΔW is linear in that
        # factor, so ΔW moves by at most u₃₂·|w|·M. Each side's float64 probe adds probe_rounding.
        probe = probe_rounding(layers[name], bounds[name])
        tolerance = fp_tolerance(torch.float32, 1, abs(w) * bounds[name]) + probe + abs(w) * probe
        if algo == "full":
            # full keeps W + ΔW in the layer's float32 weight: the file's diff is that minus W,
            # rounded (a second u₃₂·|w|·M), and loading rounds W + w·diff again, u₃₂·(|W| + |w|·M).
            base = layers[name].weight.detach().double().abs()
            tolerance = tolerance + fp_tolerance(torch.float32, 1, abs(w) * bounds[name]) + fp_tolerance(torch.float32, 1, base + abs(w) * bounds[name])
        assert_within(after[name], w * delta, tolerance, name)
        if w not in (0, 1) and delta.any():  # a 1 % error in the weight fails
            assert not (after[name] * 1.01 - w * delta).abs().le(tolerance).all(), name
    assert result.modules == len({k.split(".", 1)[0] for k in original})
    # lycoris-lora's own loader rebuilds every module of the baked file
    text_encoder, unet = build_tiny_sd(seed=0)
    layers = model_layers(text_encoder, unet)
    for name in {k.split(".", 1)[0] for k in baked}:
        module_class, params = get_module(baked, name)
        assert module_class is not None
        if algo != "ia3":  # lycoris-lora 4.1.3 cannot rebuild IA3 from any file (see lycoris_library)
            assert make_module(module_class, params, name, layers[name]) is not None


def test_baked_sdxl_lokr_loads_with_lycoris_kohya(tmp_path):
    import lycoris.kohya as kohya

    text_encoders, unet = shrunk_sdxl()
    network = ours.create_network(1.0, 4, 1.0, None, text_encoders, unet, algo="lokr", factor="4")
    network.apply_to(text_encoders, unet, True, True)
    perturb(network)
    path, output = tmp_path / "xl.safetensors", tmp_path / "xl_outd.safetensors"
    network.save_weights(str(path), None, {})
    bake_lycoris(str(path), str(output), "OUTD", model="sdxl")
    assert {k: v.shape for k, v in load_file(str(output)).items()} == {k: v.shape for k, v in load_file(str(path)).items()}
    fresh_te, fresh_unet = shrunk_sdxl()
    loaded, _ = kohya.create_network_from_weights(1.0, str(output), None, fresh_te, fresh_unet)
    assert len(loaded.unet_loras) + len(loaded.text_encoder_loras) == len(network.all_loras)
    outd = parse_lbw(SDXL, "OUTD")
    zeroed = [m for m in network.unet_loras if outd.blocks[block_index(m.lora_name, SDXL)] == 0]
    assert zeroed  # OUTD keeps only some output blocks: the others are zero, not missing


def test_bake_refuses_what_is_not_linear(tmp_path):
    path, _ = trained_file(tmp_path, "diag-oft", {}, probe=False)
    with pytest.raises(NetworkArgError, match="diag-oft.*not linear"):
        bake_lycoris(str(path), str(tmp_path / "x.safetensors"), VECTOR, model="sd1")
    path, _ = trained_file(tmp_path, "loha", {"dora_wd": "True"}, name="dora", probe=False)
    with pytest.raises(NetworkArgError, match="without DoRA"):
        bake_lycoris(str(path), str(tmp_path / "y.safetensors"), VECTOR, model="sd1")
