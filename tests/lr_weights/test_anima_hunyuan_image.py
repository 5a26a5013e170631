"""lr_weights.anima and lr_weights.hunyuan_image beyond upstream parity (test_*_upstream_parity.py):
the new args on the tiny models rebuilt from the recorded skeletons, from first principles."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lr_weights import hunyuan_image
from lr_weights.errors import NetworkArgError
from lr_weights.models.reference import build_reference_model

from tests.lr_weights.test_dit_families_upstream_parity import FAMILIES

ANIMA_FIGURES = FAMILIES["anima"].figures
HUNYUAN_FIGURES = FAMILIES["hunyuan_image"].figures

UNET_LR = 1e-4


def make_anima(**args):
    return ANIMA_FIGURES.create(ANIMA_FIGURES.case("a01_plain"), {k: str(v) for k, v in args.items()})


def make_hunyuan(**args):
    return HUNYUAN_FIGURES.create(HUNYUAN_FIGURES.case("h01_plain"), {k: str(v) for k, v in args.items()})


def lrs(network):
    groups = network.prepare_optimizer_params_with_multiple_te_lrs([], UNET_LR, 1e-3)[0]
    names = {id(p): n for n, p in network.named_parameters()}
    return {names[id(p)].rsplit(".", 2)[0]: g["lr"] for g in groups for p in g["params"]}


def test_anima_block_lr_is_unet_lr_times_weight_and_fixed_blocks_keep_one():
    weights = [round(0.1 + 0.03 * i, 4) for i in range(28)]
    network = make_anima(block_lr_weight=",".join(map(str, weights)), include_patterns="['x_embedder.*', 'final_layer.*']")
    by_module = lrs(network)
    for name, lr in by_module.items():
        if name.startswith("lora_unet_blocks_"):
            assert lr == UNET_LR * weights[int(name.split("_")[3])], name
        elif name.startswith("lora_unet_"):  # IN (x_embedder) and OUT (final_layer): fixed blocks, weight 1
            assert lr == UNET_LR, name
    assert any(n.startswith("lora_unet_x_embedder") for n in by_module) and any(n.startswith("lora_unet_final_layer") for n in by_module)


def test_anima_llm_adapter_weights_need_train_llm_adapter():
    network = make_anima(train_llm_adapter="true", llm_adapter_lr_weight="0,0.5,0.5,1,1,2")
    by_module = lrs(network)
    assert not any("llm_adapter_blocks_0_" in n for n in by_module)  # weight 0: no modules
    assert by_module["lora_unet_llm_adapter_blocks_5_mlp_0"] == UNET_LR * 2
    with pytest.raises(NetworkArgError, match="train_llm_adapter") as error:
        make_anima(llm_adapter_lr_weight="1,1,1,1,1,1")
    assert error.value.key == "llm_adapter_lr_weight"


def test_anima_block_dims_and_alphas():
    dims = [4] * 28
    dims[3], dims[20] = 8, 0
    network = make_anima(block_dims=",".join(map(str, dims)), block_alphas=",".join(["2"] * 28))
    by_name = {m.lora_name: m for m in network.unet_loras}
    assert by_name["lora_unet_blocks_3_mlp_layer1"].lora_dim == 8 and float(by_name["lora_unet_blocks_3_mlp_layer1"].alpha) == 2
    assert not any(n.startswith("lora_unet_blocks_20_") for n in by_name)


@pytest.mark.parametrize(
    "key,value",
    [
        ("block_lr_weight", "nan"),
        ("block_lr_weight", "sine+x"),
        ("block_dims", "4,4"),
        ("double_lr_weight", "sine"),  # FLUX / HunyuanImage's
        ("in_dims", "4,4,4,4,4"),  # FLUX's
        ("exclude_patterns", "['blocks.(']"),
        ("block_lr_wieght", "sine"),  # a typo
    ],
)
def test_anima_bad_new_args_name_key_and_value(key, value):
    with pytest.raises(NetworkArgError) as error:
        make_anima(**{key: value})
    assert error.value.key == key and key in str(error.value)


def test_a_negative_weight_the_threshold_lets_through_is_refused():
    with pytest.raises(NetworkArgError, match="B03") as error:
        make_anima(block_lr_weight=",".join(["1"] * 3 + ["-0.5"] + ["1"] * 24), block_lr_zero_threshold="-1")
    assert error.value.key == "block_lr_weight"


def test_anima_lbw_vector_sets_te_in_adapter_blocks_out():
    vector = ["0.5", "1"] + ["1"] * 6 + ["0.25"] * 28 + ["1"]  # TE, IN, A00..A05, B00..B27, OUT
    network = make_anima(lbw_weights=",".join(vector))
    by_module = lrs(network)
    assert by_module["lora_te_layers_0_mlp_up_proj"] == 1e-3 * 0.5
    assert by_module["lora_unet_blocks_0_mlp_layer1"] == UNET_LR * 0.25


def test_hunyuan_block_lr_and_stack_dims():
    network = make_hunyuan(double_lr_weight="0.5", single_lr_weight="linear+.5", single_block_dims=",".join(["2"] * 39 + ["8"]))
    by_module = lrs(network)
    assert by_module["lora_unet_double_blocks_7_img_attn_qkv"] == UNET_LR * 0.5
    assert by_module["lora_unet_single_blocks_13_linear2"] == UNET_LR * (13 / 39 + 0.5)
    dims = {m.lora_name: m.lora_dim for m in network.unet_loras}
    assert dims["lora_unet_single_blocks_0_linear1"] == 2 and dims["lora_unet_single_blocks_39_linear1"] == 8


@pytest.mark.parametrize(
    "key,value",
    [("single_lr_weight", "linear+"), ("train_blocks", "single"), ("train_llm_adapter", "true"), ("block_lr_weight", "1"), ("ggpo_beta", "0.01")],
)
def test_hunyuan_bad_args_name_key_and_value(key, value):
    with pytest.raises(NetworkArgError) as error:
        make_hunyuan(**{key: value})
    assert error.value.key == key


def test_hunyuan_real_text_encoders_get_no_modules():
    """The trainer passes its real encoders (Qwen2.5-VL, ByT5); upstream never adapts them."""
    encoders = [torch.nn.Sequential(torch.nn.Linear(4, 4)), torch.nn.Sequential(torch.nn.Linear(4, 4))]
    torch.manual_seed(0)
    network = hunyuan_image.create_network(1.0, 4, 1, None, encoders, HUNYUAN_FIGURES.model("tiny_hunyuan_image"))
    assert network.text_encoder_loras == [] and len(network.unet_loras) == 320


def test_hunyuan_split_qkv_parts_from_the_layer_shape():
    network = make_hunyuan(split_qkv="True")
    by_name = {m.lora_name: m for m in network.unet_loras}
    assert list(by_name["lora_unet_double_blocks_0_img_attn_qkv"].split_dims) == [32, 32, 32]
    assert list(by_name["lora_unet_single_blocks_0_linear1"].split_dims) == [32, 32, 32, 128]
    state = network.state_dict()
    assert list(state["lora_unet_single_blocks_0_linear1.lora_up.weight"].shape) == [224, 16]
    assert math.isclose(float(state["lora_unet_single_blocks_0_linear1.alpha"]), 4.0)  # alpha 1 x 4 parts (docs/flux.md)


def test_anima_reg_lrs_beat_block_weights():
    """network_reg_lrs stays absolute: a module it matches keeps that LR whatever its block's weight."""
    by_module = lrs(make_anima(block_lr_weight="0.5", network_reg_lrs=r"blocks\.3\..*=3e-4"))
    assert by_module["lora_unet_blocks_3_mlp_layer1"] == 3e-4
    assert by_module["lora_unet_blocks_4_mlp_layer1"] == UNET_LR * 0.5


def test_hunyuan_split_qkv_at_real_width_is_upstreams_modules():
    """split_qkv on the real-width HunyuanImage (meta base layers, recorded D00/S00 figures): the same
    parts and shapes, and the merged file keys. Upstream keeps each part's alpha in the merged file;
    we save alpha x parts (docs/flux.md), so alphas are not compared."""
    recorded = json.loads((HUNYUAN_FIGURES.folder / "split_qkv_real_width.json").read_text(encoding="utf-8"))
    run = recorded["runs"]["split_qkv"]
    _, dit = build_reference_model("hunyuan_image")
    torch.manual_seed(recorded["seed"])
    network = hunyuan_image.create_network(1.0, recorded["network_dim"], recorded["network_alpha"], None, [None, None], dit, split_qkv="True")
    assert len(network.unet_loras) == run["n_modules"]
    by_name = {m.lora_name: m for m in network.unet_loras}
    for figure in run["modules"]:
        module = by_name[figure["name"]]
        if "split_dims" in figure:
            assert list(module.split_dims) == figure["split_dims"]
            assert [list(d.weight.shape) for d in module.lora_down] == figure["down_shapes"]
            assert [list(u.weight.shape) for u in module.lora_up] == figure["up_shapes"]
        else:
            assert module.split_dims is None and list(module.lora_down.weight.shape) == figure["down_shape"]
    state = network.state_dict()
    figured = [k for k in state if k.startswith(("lora_unet_double_blocks_0_", "lora_unet_single_blocks_0_"))]
    assert sorted(figured) == sorted(run["state_dict_keys"])
    for key in figured:
        assert list(state[key].shape) == run["state_dict"][key]["shape"], key


@pytest.mark.parametrize(
    "arch_name,key",
    [("sd", "block_lr_weight"), ("sd", "llm_adapter_lr_weight"), ("sd", "train_llm_adapter"), ("flux", "train_llm_adapter"), ("flux", "exclude_patterns")],
)
def test_these_families_args_are_refused_by_the_others(arch_name, key):
    """Anima's args given to lr_weights.lora / lr_weights.flux name their owner (upstream: ignored)."""
    from lr_weights.archs import get_architecture
    from lr_weights.args.dit_settings import normalise_dit_kwargs
    from lr_weights.args.settings import normalise_kwargs

    arch = get_architecture(arch_name)
    with pytest.raises(NetworkArgError, match="lr_weights.anima") as error:
        normalise_kwargs({key: "1"}) if arch.kind == "unet" else normalise_dit_kwargs(arch, {key: "1"})
    assert error.value.key == key
