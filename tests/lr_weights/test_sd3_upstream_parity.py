"""lr_weights.sd3 against figures recorded from the real sd-scripts `networks/lora_sd3.py`.

tests/fixtures/upstream/sd3/: 38 cases on tiny MMDiTs with the real 24 (SD3.5 medium, attn2 in
blocks 0-12) and 38 (SD3.5 large) joint blocks, rebuilt here from recorded skeletons, with tiny
CLIP-L, CLIP-G and T5; and 28 bad inputs. With no new args lr_weights.sd3 must be upstream: modules
in creation order, dims, alphas, shapes, same-seed initial tensors, per-parameter LRs, group order,
state-dict keys and tensors, file. Where it deliberately differs (docs/sd3.md), the test says so.
"""

from __future__ import annotations

import math
import os
import tempfile
from functools import lru_cache

import pytest

from lr_weights import sd3
from lr_weights.errors import NetworkArgError
from tests.dit_figures import SKIP_OTHER_CPU, Figures, check_bad_input, create, down_hashes, lrs_by_name, replay_init, state_sha256, upstream_lrs_by_name

FIGURES = Figures("sd3")
# Refused on purpose: upstream parses train_block_indices against a dummy total of 999, so an index
# past the model's last joint block is silently dropped; ours checks the real count.
REFUSED = {"s21_block_indices_past_end", "s22_block_index_past_end_only"}
# Upstream silently treats `train_t5xxl=true` as off; we read it as on, as lr_weights.flux does.
SAME_AS = {"s41_train_t5xxl_lowercase": "s40_train_t5xxl"}
# A `dropout=` network arg (what train_network.py injects from --network_dropout) is the neuron
# dropout when --network_dropout is unset, in every lr_weights entry point; upstream ignores it.
DROPOUT_ARG = {"s53_dropout_kwarg_string": 0.1}
CASES = [slug for slug in FIGURES.slugs if slug not in REFUSED]
SPLIT = {"s30_split_qkv", "s31_split_qkv_loraplus_indices", "s32_split_qkv_large"}


def models(model: str):
    return [FIGURES.model(n) for n in ("tiny_te1", "tiny_te2", "tiny_te3")], FIGURES.model(f"tiny_{model}")


def build(spec: dict):
    encoders, mmdit = models(spec["model"])
    return create(sd3, spec, encoders, mmdit)


@lru_cache(maxsize=None)
def built(slug: str):
    spec = FIGURES.case(slug)
    network = build(spec)
    groups, descriptions = network.prepare_optimizer_params_with_multiple_te_lrs(spec["text_encoder_lr"], spec["unet_lr"], spec["learning_rate"])
    return spec, network, groups, descriptions


def expected(slug: str) -> dict:
    return FIGURES.case(SAME_AS.get(slug, slug))["result"]


@lru_cache(maxsize=None)
def replayed(slug: str):
    return replay_init(FIGURES.case(slug)["seed"], expected(slug)["modules"])


def recorded_draws_hold_here(slug: str) -> bool:
    return replayed(slug) == [m["down_sha256"] for m in expected(slug)["modules"]]


def clean(description: str) -> str:
    """Upstream's descriptions have stray spaces ("textencoder 1 ", "textencoder 1  plus"), and it
    labels CLIP-G's groups "textencoder 1" like CLIP-L's (so a trainer logs both LRs under one
    name); ours are "textencoder 2". The figures' group order tells which encoder a group is."""
    return " ".join(description.split())


def upstream_descriptions(result: dict):
    names = []
    seen_te1_groups = 0
    te1_modules = sum(1 for m in result["modules"] if m["block_kind"] == "te1")
    for group in result["groups"]:
        text = clean(group["description"])
        if text.startswith("textencoder 1"):
            # CLIP-L's groups come first; once its tensors are covered, "textencoder 1" is CLIP-G
            if seen_te1_groups >= 2 * te1_modules:
                text = text.replace("textencoder 1", "textencoder 2")
            seen_te1_groups += group["n_tensors"]
        names.append(text)
    return names


@pytest.mark.parametrize("slug", CASES)
def test_modules_dims_shapes_and_same_seed_tensors(slug):
    _, network, _, _ = built(slug)
    want = expected(slug)["modules"]
    got = network.all_loras
    assert [m.lora_name for m in got] == [m["name"] for m in want]
    for module, figure in zip(got, want):
        assert module.lora_dim == figure["dim"] and float(module.alpha) == figure["alpha"], module.lora_name
        if "split_dims" in figure:
            assert list(module.split_dims) == figure["split_dims"]
            assert [list(d.weight.shape) for d in module.lora_down] == figure["down_shapes"]
            assert [list(u.weight.shape) for u in module.lora_up] == figure["up_shapes"]
        else:
            assert list(module.lora_down.weight.shape) == figure["down_shape"] and list(module.lora_up.weight.shape) == figure["up_shape"]
        for key in ("dropout", "rank_dropout", "module_dropout"):
            want_value = DROPOUT_ARG[slug] if key == "dropout" and slug in DROPOUT_ARG else figure.get(key)
            assert getattr(module, key) == want_value, (module.lora_name, key)
    assert down_hashes(network) == replayed(slug)
    if not recorded_draws_hold_here(slug):
        pytest.skip(SKIP_OTHER_CPU)
    assert down_hashes(network) == [m["down_sha256"] for m in want]


@pytest.mark.parametrize("slug", CASES)
def test_per_parameter_learning_rates_and_groups(slug):
    _, network, groups, descriptions = built(slug)
    result = expected(slug)
    assert lrs_by_name(network, groups) == upstream_lrs_by_name(result)
    assert [len(list(g["params"])) for g in groups] == [g["n_tensors"] for g in result["groups"]]
    assert descriptions == upstream_descriptions(result)


@pytest.mark.parametrize("slug", CASES)
def test_state_dict_and_file_match(slug):
    if not recorded_draws_hold_here(slug):
        pytest.skip(SKIP_OTHER_CPU)
    _, network, _, _ = built(slug)
    result = expected(slug)
    state = network.state_dict()
    keys = list(state)
    if slug in SPLIT:
        # Merged as upstream (down stacked, up block-diagonal, in place, order down, up, alpha), but
        # the alpha saved is alpha x parts (docs/flux.md: a loader then applies what was trained).
        assert keys == result["state_dict"]["keys"]
        for module in network.all_loras:
            if module.split_dims is not None:
                state[f"{module.lora_name}.alpha"] = state[f"{module.lora_name}.alpha"] / len(module.split_dims)
    else:
        assert result["state_dict"]["key_order_holds"]
    assert len(keys) == result["state_dict"]["n_keys"] and state_sha256(state, keys) == result["state_dict"]["sha256_all"]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "lora.safetensors")
        network.save_weights(path, None, {})
        from safetensors import safe_open

        with safe_open(path, "pt") as handle:
            metadata = handle.metadata()
            assert sorted(handle.keys()) == sorted(keys) and len(keys) == result["saved_file"]["n_keys"]
    if slug not in SPLIT:
        for key in ("sshs_model_hash", "sshs_legacy_hash"):
            assert metadata[key] == result["saved_file"]["metadata"][key]


@pytest.mark.parametrize("slug", CASES)
def test_host_attributes(slug):
    _, network, _, _ = built(slug)
    attributes = expected(slug)["host_attributes"]
    for key in ("train_t5xxl", "split_qkv", "loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio"):
        assert getattr(network, key) == attributes[key], key


@pytest.mark.parametrize("slug", sorted(REFUSED))
def test_indices_past_the_last_joint_block_are_refused(slug):
    """Upstream drops them silently (s21 trains every block, s22 none); the 24-block model has J00..J23."""
    spec = FIGURES.case(slug)
    with pytest.raises(NetworkArgError) as error:
        build(spec)
    assert error.value.key == "train_block_indices" and spec["network_args"]["train_block_indices"] in str(error.value)
    assert "0..23" in str(error.value)


# ---- block-wise learning rates, from first principles -------------------------------------------


def sine(n):
    """sd-scripts' `sine` preset over n blocks: sin(pi/2 * i/(n-1))."""
    return [math.sin(math.pi / 2 * i / (n - 1)) for i in range(n)]


@pytest.mark.parametrize("model,blocks", [("sd35m", 24), ("sd35l", 38)])
def test_joint_lr_weight_gives_each_block_unet_lr_times_its_weight(model, blocks):
    """joint_lr_weight=sine over the loaded model's own joint-block count; text encoders and emb
    modules (IN, OUT) keep their LRs; LoRA+ multiplies each block's LR."""
    spec = dict(FIGURES.case("s01_plain"), model=model, network_args={"joint_lr_weight": "sine", "emb_dims": "4,4,4,4,4,4", "loraplus_unet_lr_ratio": "4"})
    network = build(spec)
    groups, descriptions = network.prepare_optimizer_params_with_multiple_te_lrs([], 1e-4, 1e-3)
    weights = sine(blocks)
    lrs = lrs_by_name(network, groups)
    checked = 0
    for name, lr in lrs.items():
        lora = name.split(".")[0]
        plus = 4.0 if ".lora_up." in name else 1.0
        if lora.startswith("lora_unet_joint_blocks_"):
            block = int(lora.split("_")[4])
            if weights[block] == 0:
                continue
            assert lr == pytest.approx(1e-4 * weights[block] * plus, rel=1e-15), name
            checked += 1
        elif lora.startswith("lora_unet_"):
            assert lr == pytest.approx(1e-4 * plus, rel=1e-15), name
        else:
            assert lr == 1e-3, name
    # sine's first weight is 0: J00 has no modules (as with block_lr_zero_threshold), the rest do
    assert not any(n.startswith("lora_unet_joint_blocks_0_") for n in lrs)
    assert checked == sum(2 for m in network.unet_loras if m.lora_name.startswith("lora_unet_joint_blocks_"))
    assert "unet J05" in descriptions and "unet J05 plus" in descriptions and f"unet J{blocks - 1:02d}" in descriptions
    assert f"unet J{blocks:02d}" not in descriptions


def test_joint_lr_weight_of_the_wrong_length_names_the_count_of_the_loaded_model():
    spec = dict(FIGURES.case("s01_plain"), model="sd35l", network_args={"joint_lr_weight": ",".join(["1"] * 24)})
    with pytest.raises(NetworkArgError) as error:
        build(spec)
    assert error.value.key == "joint_lr_weight" and "38" in str(error.value)


@pytest.mark.parametrize("slug,model", [("s60_threshold_as_indices", "sd35m"), ("s61_threshold_as_indices_large", "sd35l")])
def test_threshold_pruning_equals_upstreams_block_indices(slug, model):
    """joint_lr_weight + block_lr_zero_threshold builds exactly the modules (and same-seed tensors)
    that upstream builds with the equivalent train_block_indices, and each kept block's LR is
    unet_lr x its weight."""
    spec = FIGURES.case(slug)
    weights = spec["block_weights"]
    args = {"joint_lr_weight": weights["joint_spec"], "block_lr_zero_threshold": str(weights["threshold"])}
    network = build(dict(spec, network_args=args))
    want = spec["result"]["modules"]
    assert [m.lora_name for m in network.all_loras] == [m["name"] for m in want]
    assert down_hashes(network) == replayed(slug)
    groups, _ = network.prepare_optimizer_params_with_multiple_te_lrs(spec["text_encoder_lr"], spec["unet_lr"], spec["learning_rate"])
    for name, lr in lrs_by_name(network, groups).items():
        if name.startswith("lora_unet_joint_blocks_"):
            assert lr == pytest.approx(spec["unet_lr"] * weights["joint"][int(name.split("_")[4])], rel=1e-15), name


def test_joint_block_dims_and_alphas_set_each_blocks_modules():
    dims = [str(4 + i % 3) for i in range(24)]
    alphas = [str(1 + i % 2) for i in range(24)]
    spec = dict(FIGURES.case("s01_plain"), network_args={"joint_block_dims": ",".join(dims), "joint_block_alphas": ",".join(alphas), "x_mlp_dim": "2"})
    network = build(spec)
    for module in network.unet_loras:
        block = int(module.lora_name.split("_")[4])
        want = 2 if "x_block_mlp" in module.lora_name else int(dims[block])  # a component dim wins, as upstream
        assert module.lora_dim == want and float(module.alpha) == float(alphas[block]), module.lora_name


# ---- bad input -----------------------------------------------------------------------------------

BAD = FIGURES.bad_inputs
# Accepted on purpose: lower-case flags mean on (upstream: silently off); conv_alpha alone is a
# no-op with a warning (as upstream, which ignores it).
ACCEPTED = {"b16_split_qkv_lowercase", "b17_verbose_one", "b27_conv_alpha_alone"}


@pytest.mark.parametrize("bad", BAD, ids=[b["slug"] for b in BAD])
def test_bad_input_is_a_value_error_naming_key_and_value(bad):
    check_bad_input(build, bad, ACCEPTED)


def test_other_families_args_name_their_entry_point():
    spec = dict(FIGURES.case("s01_plain"), network_args={"double_lr_weight": "sine"})
    with pytest.raises(NetworkArgError, match="lr_weights.flux"):
        build(spec)
