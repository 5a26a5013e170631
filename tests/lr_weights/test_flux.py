"""lr_weights.flux on a tiny FLUX built in-process (sd-scripts' module names, random init).

Upstream parity on recorded figures is in test_flux_upstream_parity.py; here: what the network
does with block weights, split_qkv, LBW, Chroma, GGPO, files and the fused forward.
"""

import math

import pytest
import torch

from lr_weights import flux as lora_flux
from lr_weights.archs import FLUX
from lr_weights.errors import NetworkArgError
from lr_weights.models.tiny_flux import build_tiny_flux

from tests.tolerances import assert_within, delta_norm64, float64, float64_agreement, fp_tolerance, max_norm_rtol, on_grid

UNET_LR = 1e-4


def make(seed=0, chroma=False, **kwargs):
    encoders, model = build_tiny_flux(seed=0, chroma=chroma)
    torch.manual_seed(seed)
    network = lora_flux.create_network(1.0, 4, 2, None, encoders, model, **kwargs)
    network.apply_to(encoders, model, True, True)
    return network, encoders, model


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 6, 16, generator=g), torch.randn(2, 5, 20, generator=g), torch.rand(2, generator=g), torch.randn(2, 24, generator=g))


def lrs_by_name(network, groups):
    names = {id(p): n for n, p in network.named_parameters()}
    return {names[id(p)]: g["lr"] for g in groups for p in g["params"]}


def randomise(network, seed=5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in network.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_default_modules_are_every_block_linear_and_clip():
    network, _, _ = make()
    # per double block: img/txt mod_lin, attn_qkv, attn_proj, mlp_0, mlp_2; per single: linear1, linear2, modulation_lin
    assert len(network.unet_loras) == 19 * 10 + 38 * 3
    assert {m.lora_name.split("_")[1] for m in network.text_encoder_loras} == {"te1"}
    assert len(network.text_encoder_loras) == 2 * 6


def test_t5_and_chroma():
    network, _, _ = make(train_t5xxl="True")
    assert any(m.lora_name.startswith("lora_te3_encoder_block_0_layer_1_DenseReluDense_wi_0") for m in network.text_encoder_loras)
    chroma, _, _ = make(chroma=True, train_t5xxl="True")
    assert chroma.text_encoder_loras and all(m.lora_name.startswith("lora_te3_") for m in chroma.text_encoder_loras)
    groups, descriptions = chroma.prepare_optimizer_params_with_multiple_te_lrs([3e-5, 2e-5], UNET_LR, 1e-3)
    assert descriptions == ["textencoder 2", "unet"] and groups[0]["lr"] == 2e-5


def test_block_weights_give_one_group_per_block_at_unet_lr_times_weight():
    network, _, _ = make(double_lr_weight="linear", single_lr_weight="0.5", loraplus_unet_lr_ratio="4")
    groups, descriptions = network.prepare_optimizer_params_with_multiple_te_lrs(None, UNET_LR, 1e-3)
    by_name = lrs_by_name(network, groups)
    for module in network.unet_loras:
        block = FLUX.locate(module.lora_name)
        weight = (block - 1) / 18 if block < 20 else 0.5
        assert by_name[module.lora_name + ".lora_down.weight"] == UNET_LR * weight
        assert by_name[module.lora_name + ".lora_up.weight"] == UNET_LR * weight * 4
    # D00 has weight 0 (linear starts at 0): no modules, no group
    assert "unet D00" not in descriptions and descriptions[:4] == ["textencoder 1", "unet D01", "unet D01 plus", "unet D02"]
    assert "unet S12 plus" in descriptions
    assert not any(m.lora_name.startswith("lora_unet_double_blocks_0_") for m in network.unet_loras)


def test_regex_lrs_are_absolute_and_override_block_weights():
    network, _, _ = make(double_lr_weight="0.5", network_reg_lrs="double_blocks_3_img=7e-6,te1.*fc1=3e-6")
    groups, descriptions = network.prepare_optimizer_params_with_multiple_te_lrs([2e-5], UNET_LR, 1e-3)
    by_name = lrs_by_name(network, groups)
    assert by_name["lora_unet_double_blocks_3_img_attn_qkv.lora_down.weight"] == 7e-6
    assert by_name["lora_unet_double_blocks_3_txt_attn_qkv.lora_down.weight"] == UNET_LR * 0.5
    assert by_name["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"] == 3e-6
    assert by_name["lora_te1_text_model_encoder_layers_0_mlp_fc2.lora_up.weight"] == 2e-5
    assert descriptions[:3] == ["textencoder 1 reg_lr_1", "textencoder 1", "unet reg_lr_0"]


def test_lbw_clip_t5_scale_encoder_lrs_and_zero_drops_modules():
    values = ["0.5", "0"] + ["1"] * 58 + ["1"]
    network, _, _ = make(train_t5xxl="True", lbw_weights=",".join(values), in_dims="4,4,4,4,4")
    assert network.text_encoder_loras and not any(m.lora_name.startswith("lora_te3") for m in network.text_encoder_loras)
    groups, descriptions = network.prepare_optimizer_params_with_multiple_te_lrs([2e-5, 1e-5], UNET_LR, 1e-3)
    assert groups[0]["lr"] == 2e-5 * 0.5 and descriptions[0] == "textencoder 1"
    assert "unet IN" in descriptions


def test_text_encoder_lr_zero_drops_that_group():
    network, _, _ = make(train_t5xxl="True")
    _, descriptions = network.prepare_optimizer_params_with_multiple_te_lrs([1e-5, 0], UNET_LR, 1e-3)
    assert descriptions == ["textencoder 1", "unet"]


def test_threshold_prunes_blocks_from_modules_and_file(tmp_path):
    network, _, _ = make(double_lr_weight="sine", block_lr_zero_threshold="0.5")
    kept = {FLUX.locate(m.lora_name) for m in network.unet_loras}
    expected = {1 + k for k in range(19) if math.sin(math.pi * (k / 18) / 2) > 0.5} | set(range(20, 58))
    assert kept == expected
    path = tmp_path / "pruned.safetensors"
    network.save_weights(str(path), torch.float16, {"ss_network_module": "lr_weights.flux"})
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        blocks = {FLUX.locate(key.split(".")[0]) for key in handle.keys() if key.startswith("lora_unet")}
        assert blocks == expected and handle.get_tensor(next(iter(handle.keys()))).dtype == torch.float16


def test_forward_uses_the_fused_lora_linear():
    network, _, model = make()
    randomise(network)
    img, txt, t, y = inputs()
    out = model(img, txt, t, y)
    seen, names, stack = set(), [], [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(n for n, _ in node.next_functions)
    # one fused node per adapted Linear that this forward reaches (the text encoders are not in it)
    assert names.count("_LoRALinearBackward") == len(network.unet_loras)


def test_split_qkv_file_computes_what_the_split_network_trained(tmp_path):
    """The model is non-linear (attention, RMSNorm, GELU), so no float32 bound exists for its output:
    both forwards run in float64 (tests/tolerances.py). The weights are put on float32's grid, so
    the float32 file holds them exactly; the merged file's block-diagonal lora_up adds only exact
    zeros. The two outputs then differ only by float64 rounding."""
    with float64():
        network, encoders, model = make(split_qkv="True", train_blocks="all")
        qkv = network.get_submodule("lora_unet_double_blocks_0_img_attn_qkv")
        linear1 = network.get_submodule("lora_unet_single_blocks_0_linear1")
        assert qkv.split_dims == (32, 32, 32) and linear1.split_dims == (32, 32, 32, 128)
        randomise(network)
        with torch.no_grad():
            for p in network.parameters():
                p.copy_(p.float())
        img, txt, t, y = inputs()
        with torch.no_grad():
            trained = model(img, txt, t, y)
        path = tmp_path / "split.safetensors"
        network.save_weights(str(path), torch.float32, {})
        network.restore()
        with torch.no_grad():
            unadapted = model(img, txt, t, y)
        # the file, loaded as plain LoRA modules (as ComfyUI/diffusers/merging do), gives the same output
        plain, weights = lora_flux.create_network_from_weights(1.0, str(path), None, encoders, model)
        plain.apply_to(encoders, model, True, True)
        plain.load_weights(str(path))
        assert plain.get_submodule("lora_unet_double_blocks_0_img_attn_qkv").lora_dim == 12
        with torch.no_grad():
            loaded = model(img, txt, t, y)
    assert loaded.dtype == torch.float64
    tolerance = float64_agreement(trained.abs().max().item())
    assert (trained - unadapted).abs().max().item() > 1e3 * tolerance  # the adapters' effect: a wrong file shows
    assert_within(loaded, trained, tolerance, "plain modules from the file against the split network")
    # and loading it back into a split network restores every parameter exactly
    again, _, _ = make(split_qkv="True")
    again.load_weights(str(path))
    for (name, a), (_, b) in zip(sorted(network.named_parameters()), sorted(again.named_parameters())):
        assert torch.equal(a.float(), b), name
    assert float(again.get_submodule("lora_unet_double_blocks_0_img_attn_qkv").alpha) == 2.0


def test_merge_to_equals_the_adapted_forward(tmp_path):
    """merge_to adds ΔW to W in float32 and the model is non-linear, so the merge is made exact and
    both models run in float64 (tests/tolerances.py, as test_host_contract's merge test): lora_down
    on a 2⁻⁸ grid, lora_up on a 2⁻¹², |both| < 1, rank 4, scale α/dim = 1/2: ΔW is a multiple of
    2⁻²¹ below 2 (at most 22 significant bits); base weights on a 2⁻²² grid with |W| + |ΔW| < 2 need
    at most 23. So ΔW, W + ΔW and the file are exact and the forwards differ by float64 rounding."""
    with float64():
        network, encoders, model = make(in_dims="4,4,4,4,4")
        randomise(network)
        for layer in model.modules():
            if isinstance(layer, torch.nn.Linear):
                on_grid(layer.weight, 22)
        for module in network.all_loras:
            assert module.scale * module.multiplier == 0.5
            on_grid(module.lora_down.weight, 8)
            on_grid(module.lora_up.weight, 12)
            down, up = module.lora_down.weight, module.lora_up.weight
            assert down.abs().max() < 1 and up.abs().max() < 1
            assert (module.base_layer.weight.abs() + up.abs() @ down.abs() * 0.5).max() < 2, module.lora_name
        img, txt, t, y = inputs()
        with torch.no_grad():
            adapted = model(img, txt, t, y)
        path = tmp_path / "lora.safetensors"
        network.save_weights(str(path), None, {})
        network.restore()
        with torch.no_grad():
            unadapted = model(img, txt, t, y)
        merger, weights = lora_flux.create_network_from_weights(1.0, str(path), None, encoders, model, for_inference=True)
        assert {m.lora_name for m in merger.all_loras} == {m.lora_name for m in network.all_loras}
        merger.merge_to(encoders, model, weights)
        with torch.no_grad():
            merged = model(img, txt, t, y)
    assert merged.dtype == torch.float64
    tolerance = float64_agreement(adapted.abs().max().item())
    assert (adapted - unadapted).abs().max().item() > 1e3 * tolerance  # the LoRA's effect: a wrong merge shows
    assert_within(merged, adapted, tolerance, "merged against adapted")


def test_ggpo_norm_hooks_and_perturbed_training_forward():
    plain, _, _ = make()
    assert plain.weight_norms() is None and plain.grad_norms() is None and plain.combined_weight_norms() is None
    network, _, model = make(ggpo_beta="0.01", ggpo_sigma="0.03")
    network.train()
    randomise(network)
    img, txt, t, y = inputs()
    model(img, txt, t, y).square().mean().backward()
    network.update_grad_norms()
    network.update_norms()
    modules = len(network.all_loras)
    assert network.weight_norms().shape == (modules, 1) and network.combined_weight_norms().shape == (modules, 1)
    # the text encoders are not part of this forward: only the flow model's modules have gradients
    assert network.grad_norms().shape == (len(network.unet_loras), 1)
    torch.manual_seed(0)
    first = model(img, txt, t, y)
    torch.manual_seed(1)
    second = model(img, txt, t, y)
    assert not torch.equal(first, second)  # the perturbation is random in training
    network.eval()
    assert torch.equal(model(img, txt, t, y), model(img, txt, t, y))


def test_max_norm_scales_split_modules_too():
    network, _, _ = make(split_qkv="True")
    randomise(network)
    bound = max_norm_rtol(network.all_loras, torch.float32)  # tests/tolerances.py, split parts' rows included
    scaled, mean, largest = network.apply_max_norm_regularization(0.01, "cpu")
    # The reported norm is norm · (max / norm) in float32: 0.01 rounded, a division, a product.
    assert scaled == len(network.all_loras) and largest == pytest.approx(0.01, rel=fp_tolerance(torch.float32, 3))
    for module in network.all_loras:
        assert delta_norm64(module) == pytest.approx(0.01, rel=bound), module.lora_name


def test_from_weights_reads_t5_and_in_layers(tmp_path):
    network, encoders, model = make(train_t5xxl="True", in_dims="2,0,0,0,3")
    path = tmp_path / "t5.safetensors"
    network.save_weights(str(path), None, {})
    network.restore()
    loaded, _ = lora_flux.create_network_from_weights(1.0, str(path), None, encoders, model)
    assert [(m.lora_name, m.lora_dim) for m in loaded.all_loras] == [(m.lora_name, m.lora_dim) for m in network.all_loras]


def test_sd_module_refuses_flux_args(tiny_sd):
    from lr_weights import lora

    text_encoder, unet = tiny_sd
    with pytest.raises(NetworkArgError, match="double_lr_weight.*lr_weights.flux"):
        lora.create_network(1.0, 4, 1, None, text_encoder, unet, double_lr_weight="1")


def test_rank_larger_than_a_layer_names_the_arg():
    with pytest.raises(NetworkArgError) as error:
        make(img_attn_dim="64")
    assert error.value.key == "img_attn_dim" and "lora_unet_double_blocks_0_img_attn_qkv" in str(error.value)


def test_inspect_and_bake_a_flux_file(tmp_path):
    from safetensors.torch import load_file

    from lr_weights.files.lora_file import bake, read_summary

    network, _, _ = make(train_t5xxl="True")
    randomise(network)
    path = tmp_path / "flux.safetensors"
    network.save_weights(str(path), None, {})
    summary = read_summary(str(path))
    assert summary.model == "flux" and summary.arch is FLUX
    rows = {row["block"]: row for row in summary.block_rows()}
    assert rows["D00"]["modules"] == 10 and rows["S37"]["modules"] == 3 and rows["TE3"]["modules"] == 14
    # CLIP x0.5, T5 dropped, D00 x0.25, S00 dropped, everything else x1
    vector = ["0.5", "0", "1", "0.25"] + ["1"] * 18 + ["0"] + ["1"] * 37 + ["1"]
    out = tmp_path / "baked.safetensors"
    result = bake(str(path), str(out), ",".join(vector))
    before, after = load_file(str(path)), load_file(str(out))
    assert not any(k.startswith(("lora_te3_", "lora_unet_single_blocks_0_")) for k in after)
    key = "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"
    assert torch.equal(after[key], before[key] * 0.25)
    key = "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"
    assert torch.equal(after[key], before[key] * 0.5)
    assert result.dropped == 14 + 3
