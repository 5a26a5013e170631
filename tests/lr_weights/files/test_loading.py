"""Loading what is really out there: files with or without alphas, fp16/bf16, .pt/.ckpt,
diffusers-named SDXL keys, broken files, files for another model or other dims. Each gives a correct
load or a ValueError that names the file's keys and shapes; never a shape error from inside torch."""

import logging

import pytest
import torch
from safetensors.torch import save_file

from lr_weights import lora
from lr_weights.archs.blocks import SD, SDXL
from lr_weights.files.io import load_lora_file
from lr_weights.archs.sdxl_names import sdxl_ldm_module_name
from lr_weights.files.loading import expected_shapes
from lr_weights.network.targets import unet_targets
from lr_weights.models.tiny import build_tiny_sd

from tests.upstream_models import rebuild


def trained_network(text_encoder, unet, dim=4, alpha=2.0, **kwargs):
    """A network whose up weights are non-zero, as after training."""
    torch.manual_seed(3)
    network = lora.create_network(1.0, dim, alpha, None, text_encoder, unet, **kwargs)
    with torch.no_grad():
        for module in network.all_loras:
            module.lora_up.weight.normal_(std=0.05)
    return network


def outputs(text_encoder, unet):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, text_encoder.cfg.vocab, (1, text_encoder.cfg.max_length), generator=g)
    with torch.no_grad():
        context = text_encoder(tokens)
        return context, unet(torch.randn(1, 4, 16, 16, generator=g), torch.tensor([500]), context)


def resumed(path, text_encoder, unet, **kwargs):
    """--dim_from_weights then --network_weights, as train_network.py does it."""
    network, _ = lora.create_network_from_weights(1, str(path), None, text_encoder, unet, **kwargs)
    network.apply_to(text_encoder, unet)
    network.load_weights(str(path))
    return network


def assert_same_adapters(network, reference, atol=0.0):
    ours, theirs = network.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.allclose(ours[key].float(), theirs[key].float(), atol=atol, rtol=0), key


# ---- files as other tools write them ---------------------------------------------------------


@pytest.mark.parametrize(
    "suffix, dtype",
    [(".safetensors", torch.float32), (".safetensors", torch.float16), (".safetensors", torch.bfloat16), (".pt", torch.float16), (".ckpt", torch.bfloat16)],
)
def test_save_then_resume_gives_the_same_network(tmp_path, suffix, dtype):
    text_encoder, unet = build_tiny_sd()
    original = trained_network(text_encoder, unet, conv_dim="2", conv_alpha="1")
    path = tmp_path / f"lora{suffix}"
    original.save_weights(str(path), dtype, {})
    saved = load_lora_file(str(path))
    assert all(v.dtype == dtype for v in saved.values())

    network = resumed(path, text_encoder, unet)
    # The network holds exactly the file's values (cast up from the save dtype).
    expected = {k: v.float() for k, v in saved.items()}
    loaded = network.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k].float(), expected[k]) for k in expected)
    assert [m.scale for m in network.all_loras] == [m.scale for m in original.all_loras]


def test_file_without_alphas_means_alpha_equals_dim(tmp_path):
    text_encoder, unet = build_tiny_sd()
    original = trained_network(text_encoder, unet, dim=4, alpha=1.0)
    tensors = {k: v for k, v in original.state_dict().items() if not k.endswith(".alpha")}
    path = tmp_path / "noalpha.safetensors"
    save_file(tensors, str(path))
    network = resumed(path, text_encoder, unet)
    assert all(float(m.alpha) == 4.0 and m.scale == 1.0 for m in network.all_loras)


def test_ckpt_with_a_state_dict_wrapper(tmp_path):
    text_encoder, unet = build_tiny_sd()
    original = trained_network(text_encoder, unet)
    path = tmp_path / "wrapped.ckpt"
    torch.save({"state_dict": original.state_dict()}, str(path))
    network = resumed(path, text_encoder, unet)
    assert_same_adapters(network, original)


def test_one_element_alpha_tensors_are_accepted(tmp_path):
    # Some tools save alpha as shape (1,) instead of a 0-d tensor.
    text_encoder, unet = build_tiny_sd()
    weights = {k: (v.reshape(1) if k.endswith(".alpha") else v) for k, v in trained_network(text_encoder, unet).state_dict().items()}
    network, _ = lora.create_network_from_weights(1, None, None, text_encoder, unet, weights_sd=weights)
    assert all(float(m.alpha) == 2.0 for m in network.all_loras)


# ---- broken files ------------------------------------------------------------------------------


def _valid_file(tmp_path, suffix):
    text_encoder, unet = build_tiny_sd()
    path = tmp_path / f"good{suffix}"
    trained_network(text_encoder, unet).save_weights(str(path), torch.float16, {})
    return path.read_bytes()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_truncated_files_are_a_value_error_naming_the_file(tmp_path, suffix):
    data = _valid_file(tmp_path, suffix)
    text_encoder, unet = build_tiny_sd()
    for cut in (0, 7, 8, 100, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{cut}{suffix}"
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=f"cut{cut}"):
            lora.create_network_from_weights(1, str(path), None, text_encoder, unet)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello world", b"\xff" * 64, b'{"not": "safetensors"}', (2**62).to_bytes(8, "little") + b"{}", (10).to_bytes(8, "little") + b"[1,2,3]xxxx"],
    ids=["empty", "text", "bytes", "json", "huge-header", "bad-header"],
)
@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".ckpt"])
def test_non_lora_files_are_a_value_error(tmp_path, content, suffix):
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="junk"):
        load_lora_file(str(path))


def test_a_torch_file_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], str(path))
    with pytest.raises(ValueError, match="state dict"):
        load_lora_file(str(path))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda w, name: w.__setitem__(name + ".alpha", torch.ones(2)), r"alpha has shape \(2,\)"),
        (lambda w, name: w.__setitem__(name + ".alpha", torch.tensor(float("nan"))), "finite"),
        (lambda w, name: w.__setitem__(name + ".lora_down.weight", torch.zeros(4)), r"lora_down.weight has shape \(4,\)"),
        (lambda w, name: w.__setitem__(name + ".lora_down.weight", torch.zeros(())), r"shape \(\)"),
        (lambda w, name: w.__setitem__(name + ".lora_down.weight", torch.zeros(0, 32)), r"dim >= 1"),
        (lambda w, name: w.__setitem__(name + ".lora_up.weight", torch.zeros(32, 3)), r"lora_up.weight: file \(32, 3\) vs model \(32, 4\)"),
        (lambda w, name: w.__setitem__(name + ".lora_down.weight", torch.zeros(4, 31)), r"lora_down.weight: file \(4, 31\) vs model \(4, 32\)"),
        (lambda w, name: w[name + ".lora_up.weight"].fill_(float("nan")), "nan or inf"),
    ],
    ids=["alpha-vector", "alpha-nan", "down-1d", "down-0d", "dim-0", "up-rank", "down-width", "nan-weights"],
)
def test_bad_module_tensors_are_named(edit, message):
    # Found by fuzzing create_network_from_weights: these were RuntimeError, IndexError and
    # ZeroDivisionError from inside torch or the module constructor.
    text_encoder, unet = build_tiny_sd()
    weights = trained_network(text_encoder, unet).state_dict()
    name = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    edit(weights, name)
    with pytest.raises(ValueError, match=message) as raised:
        lora.create_network_from_weights(1, None, None, text_encoder, unet, weights_sd=weights)
    assert name in str(raised.value)


# ---- another model, other dims -----------------------------------------------------------------


def test_a_file_for_another_architecture_is_refused_with_names(tmp_path):
    sd_te, sd_unet = rebuild("sd1")
    xl_te, xl_unet = rebuild("sdxl")
    path = tmp_path / "sd1.safetensors"
    lora.create_network(1.0, 2, 1, None, sd_te, sd_unet).save_weights(str(path), torch.float16, {})
    # sd-scripts renames the SD1 (diffusers-named) U-Net keys to SDXL names, as for a diffusers
    # SDXL file; they then name layers of other widths, and the text encoder names none at all.
    with pytest.raises(ValueError, match="another architecture") as raised:
        lora.create_network_from_weights(1, str(path), None, xl_te, xl_unet)
    assert "lora_unet_input_blocks_4_1_proj_in.lora_down.weight: file (2, 640, 1, 1) vs model (2, 640)" in str(raised.value)
    with pytest.raises(ValueError, match="another architecture") as raised:
        lora.create_network_from_weights(1, str(path), None, xl_te, None)
    assert "lora_te_text_model" in str(raised.value) and "lora_te1_text_model" in str(raised.value)

    xl_network = lora.create_network(1.0, 2, 1, None, xl_te, xl_unet)
    with pytest.raises(ValueError, match=r"does not fit this network .*input_blocks_4_1_proj_in.lora_down.weight: file \(2, 640, 1, 1\) vs network \(2, 640\)"):
        xl_network.load_weights(str(path))
    te_only = lora.create_network(1.0, 2, 1, None, xl_te, xl_unet)
    te_only.apply_to(xl_te, xl_unet, apply_text_encoder=True, apply_unet=False)
    with pytest.raises(ValueError, match="another architecture"):
        te_only.load_weights(str(path))


def test_an_sd2_file_on_sd1_names_keys_and_shapes(tmp_path):
    # Same module names, other widths: upstream fails inside load_state_dict.
    path = tmp_path / "sd2.safetensors"
    lora.create_network(1.0, 2, 1, None, *rebuild("sd2")).save_weights(str(path), torch.float16, {})
    sd1_te, sd1_unet = rebuild("sd1")
    with pytest.raises(ValueError, match=r"lora_te_text_model_encoder_layers_0_self_attn_\w+\.lora_down\.weight: file \(2, 1024\) vs model \(2, 768\)"):
        lora.create_network_from_weights(1, str(path), None, sd1_te, sd1_unet)
    network = lora.create_network(1.0, 2, 1, None, sd1_te, sd1_unet)
    with pytest.raises(ValueError, match=r"file \(2, 1024\) vs network \(2, 768\)"):
        network.load_weights(str(path))


def test_resume_with_other_dims_names_the_shapes_and_dim_from_weights_fixes_it(tmp_path):
    text_encoder, unet = build_tiny_sd()
    path = tmp_path / "dim8.safetensors"
    original = trained_network(text_encoder, unet, dim=8, block_dims=",".join(["8"] * 12 + ["2"] + ["8"] * 12), down_lr_weight="1")
    original.save_weights(str(path), torch.float32, {})

    network = lora.create_network(1.0, 4, 1, None, text_encoder, unet)
    with pytest.raises(ValueError, match=r"lora_down.weight: file \(8, 32\) vs network \(4, 32\).*--dim_from_weights"):
        network.load_weights(str(path))

    network = resumed(path, text_encoder, unet, down_lr_weight="1")
    assert_same_adapters(network, original)
    assert {m.lora_dim for m in network.unet_loras} == {8, 2}


def test_partly_matching_file_loads_what_fits_and_warns(tmp_path, caplog):
    text_encoder, unet = build_tiny_sd()
    weights = trained_network(text_encoder, unet).state_dict()
    weights["lora_unet_made_up_layer.lora_down.weight"] = torch.zeros(4, 8)
    weights["lora_unet_made_up_layer.lora_up.weight"] = torch.zeros(8, 4)
    with caplog.at_level(logging.WARNING):
        network, _ = lora.create_network_from_weights(1, None, None, text_encoder, unet, weights_sd=weights)
    assert "lora_unet_made_up_layer" in caplog.text
    assert len(network.all_loras) == len([k for k in weights if k.endswith("lora_down.weight")]) - 1


# ---- diffusers-named SDXL files ------------------------------------------------------------------


@pytest.mark.parametrize(
    "diffusers_name, sd_scripts_name",
    [
        ("lora_unet_down_blocks_1_attentions_0_transformer_blocks_1_attn2_to_k", "lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k"),
        ("lora_unet_down_blocks_2_attentions_1_proj_in", "lora_unet_input_blocks_8_1_proj_in"),
        ("lora_unet_down_blocks_0_resnets_1_conv1", "lora_unet_input_blocks_2_0_in_layers_2"),
        ("lora_unet_down_blocks_1_resnets_0_conv_shortcut", "lora_unet_input_blocks_4_0_skip_connection"),
        ("lora_unet_down_blocks_1_downsamplers_0_conv", "lora_unet_input_blocks_6_0_op"),
        ("lora_unet_mid_block_attentions_0_transformer_blocks_9_ff_net_2", "lora_unet_middle_block_1_transformer_blocks_9_ff_net_2"),
        ("lora_unet_mid_block_resnets_1_time_emb_proj", "lora_unet_middle_block_2_emb_layers_1"),
        ("lora_unet_up_blocks_0_resnets_2_conv2", "lora_unet_output_blocks_2_0_out_layers_3"),
        ("lora_unet_up_blocks_1_attentions_2_proj_out", "lora_unet_output_blocks_5_1_proj_out"),
        ("lora_unet_up_blocks_0_upsamplers_0_conv", "lora_unet_output_blocks_2_2_conv"),
        ("lora_unet_input_blocks_4_1_proj_in", None),
        ("lora_te1_text_model_encoder_layers_0_mlp_fc1", None),
        ("lora_unet_down_blocks_0_resnets_0_norm1", None),
    ],
)
def test_diffusers_names_to_sd_scripts_names(diffusers_name, sd_scripts_name):
    assert sdxl_ldm_module_name(diffusers_name) == sd_scripts_name


def _diffusers_sdxl_unet():
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        return diffusers.UNet2DConditionModel(
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(320, 640, 1280),
            layers_per_block=2,
            cross_attention_dim=2048,
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )


def test_every_diffusers_sdxl_layer_maps_onto_the_sd_scripts_layer_of_its_shape():
    # diffusers' own SDXL U-Net (built on meta) against sd-scripts' recorded SDXL U-Net.
    diffusers_targets = unet_targets(_diffusers_sdxl_unet(), SD, include_conv=True)
    sd_scripts = {t.lora_name: t.layer for t in unet_targets(rebuild("sdxl")[1], SDXL, include_conv=True)}
    mapped = {}
    for target in diffusers_targets:
        name = sdxl_ldm_module_name(target.lora_name)
        assert name in sd_scripts, target.lora_name
        assert expected_shapes(target.layer, 4) == expected_shapes(sd_scripts[name], 4), (target.lora_name, name)
        mapped[target.lora_name] = name
    assert sorted(mapped.values()) == sorted(sd_scripts) and len(set(mapped.values())) == len(mapped)


def test_diffusers_named_sdxl_file_loads_for_merge_and_resume(tmp_path):
    xl_te, xl_unet = rebuild("sdxl")
    torch.manual_seed(0)
    diffusers_named = lora.create_network(1.0, 2, 1, None, None, _diffusers_sdxl_unet(), conv_dim="2")
    path = tmp_path / "diffusers_named.safetensors"
    diffusers_named.save_weights(str(path), torch.float16, {})
    assert any(k.startswith("lora_unet_down_blocks_") for k in load_lora_file(str(path)))

    network, weights = lora.create_network_from_weights(1, str(path), None, xl_te, xl_unet, for_inference=True)
    assert len(network.unet_loras) == 788
    # The returned weights carry sd-scripts' names, so merge_to (--base_weights) finds every module.
    assert network.state_dict().keys() == weights.keys()

    resumed_network = lora.create_network(1.0, 2, 1, None, xl_te, xl_unet, conv_dim="2")
    info = resumed_network.load_weights(str(path))
    assert not [k for k in info.missing_keys if k.startswith("lora_unet")] and not info.unexpected_keys
