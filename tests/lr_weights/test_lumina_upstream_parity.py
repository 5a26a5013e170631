"""lr_weights.lumina against figures recorded from the real sd-scripts `networks/lora_lumina.py`.

tests/fixtures/upstream/lumina/: 30 cases on a tiny NextDiT with Lumina 2 2B's real 26 layers,
2 context_refiner and 2 noise_refiner blocks (rebuilt here from recorded skeletons) and a tiny
Gemma2; and 24 bad inputs. With no new args lr_weights.lumina must be upstream. Where upstream is
broken (train_block_indices never passed on, or crashing on final_layer; split_qkv unable to save)
ours works, and the test checks what it does from first principles.
"""

from __future__ import annotations

import math
import os
import tempfile
from functools import lru_cache

import pytest
import torch

from lr_weights import lumina
from lr_weights.errors import NetworkArgError
from tests.dit_figures import SKIP_OTHER_CPU, Figures, assert_file_matches, check_bad_input, create, down_hashes, lrs_by_name, replay_init, upstream_lrs_by_name

FIGURES = Figures("lumina")
# Not upstream's behaviour on purpose (each has its own test below): train_block_indices selects
# main layers (l20; l21/l22 call LoRANetwork directly); split_qkv builds split modules and saves
# (l30/l31, where upstream's state_dict() raises KeyError).
DIFFERENT = {"l20_block_indices_not_passed", "l21_direct_block_indices", "l22_direct_block_indices_transformer", "l30_split_qkv", "l31_split_qkv_refiners"}
CASES = [slug for slug in FIGURES.slugs if slug not in DIFFERENT]


def models():
    return [FIGURES.model("tiny_gemma2")], FIGURES.model("tiny_lumina2")


def build(spec: dict):
    encoders, dit = models()
    return create(lumina, spec, encoders, dit)


@lru_cache(maxsize=None)
def built(slug: str):
    spec = FIGURES.case(slug)
    network = build(spec)
    groups, descriptions = network.prepare_optimizer_params_with_multiple_te_lrs(spec["text_encoder_lr"], spec["unet_lr"], spec["learning_rate"])
    return spec, network, groups, descriptions


def recorded_draws_hold_here(slug: str) -> bool:
    result = FIGURES.case(slug)["result"]
    return replay_init(42, result["modules"]) == [m["down_sha256"] for m in result["modules"]]


def check_modules(network, figures, seed=42):
    assert [m.lora_name for m in network.all_loras] == [m["name"] for m in figures]
    for module, figure in zip(network.all_loras, figures):
        assert module.lora_dim == figure["dim"] and float(module.alpha) == figure["alpha"], module.lora_name
        assert list(module.lora_down.weight.shape) == figure["down_shape"] and list(module.lora_up.weight.shape) == figure["up_shape"]
    assert down_hashes(network) == replay_init(seed, figures)


@pytest.mark.parametrize("slug", CASES)
def test_modules_dims_shapes_and_same_seed_tensors(slug):
    _, network, _, _ = built(slug)
    want = FIGURES.case(slug)["result"]["modules"]
    check_modules(network, want)
    for module, figure in zip(network.all_loras, want):
        for key in ("dropout", "rank_dropout", "module_dropout"):
            assert getattr(module, key) == figure.get(key), (module.lora_name, key)
    if not recorded_draws_hold_here(slug):
        pytest.skip(SKIP_OTHER_CPU)
    assert down_hashes(network) == [m["down_sha256"] for m in want]


@pytest.mark.parametrize("slug", CASES)
def test_per_parameter_learning_rates_and_groups(slug):
    _, network, groups, descriptions = built(slug)
    result = FIGURES.case(slug)["result"]
    assert lrs_by_name(network, groups) == upstream_lrs_by_name(result)
    assert [len(list(g["params"])) for g in groups] == [g["n_tensors"] for g in result["groups"]]
    # upstream's descriptions have stray spaces ("textencoder ", "textencoder  plus"); ours are clean
    assert descriptions == [" ".join(g["description"].split()) for g in result["groups"]]


@pytest.mark.parametrize("slug", CASES)
def test_state_dict_and_file_match(slug):
    if not recorded_draws_hold_here(slug):
        pytest.skip(SKIP_OTHER_CPU)
    _, network, _, _ = built(slug)
    result = FIGURES.case(slug)["result"]
    assert result["state_dict"]["key_order_holds"]
    assert_file_matches(network, result)


@pytest.mark.parametrize("slug", CASES)
def test_host_attributes(slug):
    _, network, _, _ = built(slug)
    attributes = FIGURES.case(slug)["result"]["host_attributes"]
    for key in ("train_blocks", "split_qkv", "loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio"):
        assert getattr(network, key) == attributes[key], key


# ---- where upstream is broken --------------------------------------------------------------------


def test_train_block_indices_selects_main_layers():
    """Upstream's create_network never passes train_block_indices on (l20 equals the plain network).
    Ours keeps layers 0-3 and, as upstream's own check intends, leaves refiners, final_layer and the
    text encoder alone: exactly l01's modules minus layers 4-25, with the tensors the same seed
    gives them in that order."""
    spec = FIGURES.case("l20_block_indices_not_passed")
    network = build(spec)
    plain = FIGURES.case("l01_plain")["result"]["modules"]
    kept = [m for m in plain if m["block_kind"] != "layers" or m["block_index"] < 4]
    check_modules(network, kept)


def test_train_block_indices_with_transformer_equals_upstreams_intent():
    """l22: upstream's LoRANetwork given the selection directly with train_blocks='transformer' (so
    its check never meets final_layer) keeps layers 0-3; create_network with the same args here
    builds exactly that, same-seed tensors included."""
    spec = FIGURES.case("l22_direct_block_indices_transformer")
    network = build(dict(spec, network_args={"train_blocks": "transformer", "train_block_indices": "0-3"}))
    check_modules(network, spec["result"]["modules"])
    if recorded_draws_hold_here("l22_direct_block_indices_transformer"):
        assert down_hashes(network) == [m["down_sha256"] for m in spec["result"]["modules"]]


def test_upstream_crashes_on_final_layer_where_ours_works():
    spec = FIGURES.case("l21_direct_block_indices")
    assert spec["result"]["error"] == "ValueError: invalid literal for int() with base 10: 'layer'"
    network = build(dict(spec, network_args={"train_block_indices": "0-3"}))
    assert any(m.lora_name.startswith("lora_unet_final_layer_") for m in network.all_loras)


@pytest.mark.parametrize("slug", ["l30_split_qkv", "l31_split_qkv_refiners"])
def test_split_qkv_splits_q_k_v_and_saves_a_plain_lora_of_the_same_change(slug):
    """Upstream builds unsplit modules and then cannot save (KeyError). Ours splits every
    attention_qkv into q (hidden), k and v (kv heads x head dim each: 48, 24, 24 on the tiny model,
    2304, 768, 768 on 2B), and saves it merged: a plain LoRA whose update equals the split one."""
    spec = FIGURES.case(slug)
    assert spec["result"]["error"].startswith("KeyError") and spec["result"]["error_stage"] == "state_dict"
    network = build(spec)
    built_upstream = spec["result"]["built"]["modules"]
    assert [m.lora_name for m in network.all_loras] == [m["name"] for m in built_upstream]
    split = [m for m in network.all_loras if m.split_dims is not None]
    assert split and all(m.lora_name.endswith("attention_qkv") for m in split)
    assert all(m.split_dims == (48, 24, 24) for m in split)
    torch.manual_seed(0)
    for module in split:
        for up in module.lora_up:
            up.weight.data.normal_()
    state = network.state_dict()
    x = torch.randn(3, 48, dtype=torch.float64)
    for module in split:
        key = module.lora_name
        down, up, alpha = state[f"{key}.lora_down.weight"].double(), state[f"{key}.lora_up.weight"].double(), float(state[f"{key}.alpha"])
        assert down.shape == (12, 48) and up.shape == (96, 12)
        merged = x @ down.T @ up.T * (alpha / down.shape[0])  # what a loader applies
        parts = torch.cat([x @ d.weight.double().T @ u.weight.double().T for d, u in zip(module.lora_down, module.lora_up)], dim=-1) * module.scale
        assert torch.allclose(merged, parts, rtol=1e-12, atol=1e-12), key
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "lora.safetensors")
        network.save_weights(path, None, {})
        assert os.path.getsize(path) > 0


# ---- block-wise learning rates, from first principles -------------------------------------------


def test_layer_and_refiner_lr_weights_give_each_block_unet_lr_times_its_weight():
    """layer_lr_weight=linear over the 26 layers: layer i gets i/25 (layer 0, weight 0, gets no
    modules); refiner_lr_weight one value each for C0, C1, N0, N1; final_layer and the text encoder
    keep their LRs."""
    refiner = [0.5, 0.25, 2.0, 1.5]
    spec = dict(FIGURES.case("l01_plain"), network_args={"layer_lr_weight": "linear", "refiner_lr_weight": ",".join(map(str, refiner))})
    network = build(spec)
    groups, descriptions = network.prepare_optimizer_params_with_multiple_te_lrs([], 1e-4, 1e-3)
    lrs = lrs_by_name(network, groups)
    for name, lr in lrs.items():
        lora = name.split(".")[0]
        if lora.startswith("lora_unet_layers_"):
            assert lr == pytest.approx(1e-4 * int(lora.split("_")[3]) / 25, rel=1e-15), name
        elif lora.startswith("lora_unet_context_refiner_"):
            assert lr == pytest.approx(1e-4 * refiner[int(lora.split("_")[4])], rel=1e-15), name
        elif lora.startswith("lora_unet_noise_refiner_"):
            assert lr == pytest.approx(1e-4 * refiner[2 + int(lora.split("_")[4])], rel=1e-15), name
        elif lora.startswith("lora_unet_final_layer_"):
            assert lr == 1e-4, name
        else:
            assert lr == 1e-3, name
    assert not any(n.startswith("lora_unet_layers_0_") for n in lrs)
    assert {"unet C0", "unet N1", "unet L25", "unet OUT"} <= set(descriptions)


@pytest.mark.parametrize("key,value,count", [("layer_lr_weight", "1,1,1", "26"), ("refiner_lr_weight", "1,1", "4"), ("layer_block_dims", "4,4", "26")])
def test_wrong_length_lists_name_key_value_and_count(key, value, count):
    spec = dict(FIGURES.case("l01_plain"), network_args={key: value})
    with pytest.raises(NetworkArgError) as error:
        build(spec)
    assert error.value.key == key and value in str(error.value) and count in str(error.value)


def test_layer_block_dims_set_each_layers_modules():
    dims = [str(2 + i % 4) for i in range(26)]
    network = build(dict(FIGURES.case("l01_plain"), network_args={"layer_block_dims": ",".join(dims)}))
    for module in network.unet_loras:
        if module.lora_name.startswith("lora_unet_layers_"):
            assert module.lora_dim == int(dims[int(module.lora_name.split("_")[3])])
        else:
            assert module.lora_dim == 4


def test_threshold_drops_low_weight_layers():
    network = build(dict(FIGURES.case("l01_plain"), network_args={"layer_lr_weight": "sine", "block_lr_zero_threshold": "0.3"}))
    kept = sorted({int(m.lora_name.split("_")[3]) for m in network.unet_loras if m.lora_name.startswith("lora_unet_layers_")})
    assert kept == [i for i in range(26) if math.sin(math.pi / 2 * i / 25) > 0.3]


# ---- bad input -----------------------------------------------------------------------------------

BAD = FIGURES.bad_inputs
# Accepted on purpose: lower-case flags mean on (upstream: silently off); conv_dim is a no-op with
# a warning (as upstream, which parses it and adapts only Linears).
ACCEPTED = {"b10_split_qkv_lowercase", "b11_verbose_one", "b20_conv_dim"}


@pytest.mark.parametrize("bad", BAD, ids=[b["slug"] for b in BAD])
def test_bad_input_is_a_value_error_naming_key_and_value(bad):
    check_bad_input(build, bad, ACCEPTED)
