"""lr_weights.flux against figures recorded from the real sd-scripts `networks/lora_flux.py`.

tests/fixtures/upstream/flux/: 43 parity cases on a tiny FLUX with the real 19/38 blocks (its
module tree rebuilt here from recorded skeletons, no sd-scripts import), and 36 bad inputs. With no
new args lr_weights.flux must be upstream: modules in creation order, dims, alphas, shapes, the
same-seed initial tensors (hashes), per-parameter LRs, group order, file keys and hashes. Where it
deliberately differs (docs/flux.md), the test says so.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from lr_weights import flux as lora_flux
from lr_weights.errors import NetworkArgError
from lr_weights.models.skeleton import build_from_skeleton

from tests.dit_figures import SKIP_OTHER_CPU, assert_file_matches, lrs_by_name, replay_case, sha256, upstream_lrs_by_name

FIGURES = Path(__file__).resolve().parents[1] / "fixtures" / "upstream" / "flux"
CASES = sorted(p.stem for p in (FIGURES / "cases").glob("*.json"))
# Upstream silently treats `train_t5xxl=true` as off; we read it as on (docs/flux.md), so f41 is
# checked against f40 (`train_t5xxl=True`) instead.
SAME_AS = {"f41_train_t5xxl_lowercase": "f40_train_t5xxl"}


def case(slug: str) -> dict:
    return json.loads((FIGURES / "cases" / f"{slug}.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def skeleton(name: str) -> dict:
    return json.loads((FIGURES / "skeletons" / f"{name}.json").read_text(encoding="utf-8"))


def models(text_encoders: str):
    te1 = None if text_encoders == "t5" else build_from_skeleton(skeleton("tiny_te1"), "cpu")
    return [te1, build_from_skeleton(skeleton("tiny_te3"), "cpu")], build_from_skeleton(skeleton("tiny_flux"), "cpu")


def create(spec: dict):
    encoders, flux = models(spec["text_encoders"])
    torch.manual_seed(spec["seed"])
    network = lora_flux.create_network(
        1.0, spec["network_dim"], spec["network_alpha"], None, encoders, flux, neuron_dropout=spec["neuron_dropout"], **spec["network_args"]
    )
    network.apply_to(encoders, flux, True, True)
    return network


@lru_cache(maxsize=None)
def built(slug: str):
    spec = case(slug)
    network = create(spec)
    groups, descriptions = network.prepare_optimizer_params_with_multiple_te_lrs(spec["text_encoder_lr"], spec["unet_lr"], spec["learning_rate"])
    return spec, network, groups, descriptions


def expected(slug: str) -> dict:
    return case(SAME_AS.get(slug, slug))["result"]


@lru_cache(maxsize=None)
def replayed_init(slug: str) -> tuple:
    return replay_case(case(SAME_AS.get(slug, slug)))


def recorded_draws_hold_here(slug: str) -> bool:
    return list(replayed_init(slug)) == [m["down_sha256"] for m in expected(slug)["modules"]]


@pytest.mark.parametrize("slug", CASES)
def test_modules_dims_shapes_and_same_seed_tensors(slug):
    _, network, _, _ = built(slug)
    want = expected(slug)["modules"]
    got = network.all_loras
    assert [m.lora_name for m in got] == [m["name"] for m in want]
    for module, figure in zip(got, want):
        assert module.lora_dim == figure["dim"] and float(module.alpha) == figure["alpha"], module.lora_name
        assert list(module.lora_down.weight.shape) == figure["down_shape"] and list(module.lora_up.weight.shape) == figure["up_shape"]
        for key in ("dropout", "rank_dropout", "module_dropout"):
            assert getattr(module, key) == figure.get(key), (module.lora_name, key)
    # same seed -> the tensors upstream's calls draw (here: replayed; on the recording CPU: recorded)
    assert tuple(sha256(m.lora_down.weight) for m in got) == replayed_init(slug)
    if not recorded_draws_hold_here(slug):
        pytest.skip(SKIP_OTHER_CPU)
    assert [sha256(m.lora_down.weight) for m in got] == [m["down_sha256"] for m in want]


@pytest.mark.parametrize("slug", CASES)
def test_per_parameter_learning_rates_and_groups(slug):
    _, network, groups, descriptions = built(slug)
    result = expected(slug)
    params = [p for _, p in network.named_parameters()]
    want = {}
    for group in result["groups"]:
        for first, last in group["param_index_ranges"]:
            for index in range(first, last + 1):
                want[index] = group["lr"]
    index_of = {id(p): i for i, p in enumerate(params)}
    got = {index_of[id(p)]: group["lr"] for group in groups for p in group["params"]}
    assert got == want
    # upstream's descriptions have stray spaces ("textencoder 1 ", "textencoder 1  plus"); ours are clean
    assert descriptions == [" ".join(g["description"].split()) for g in result["groups"]]
    assert [len(list(g["params"])) for g in groups] == [g["n_tensors"] for g in result["groups"]]


@pytest.mark.parametrize("slug", CASES)
def test_state_dict_and_file_match(slug):
    if not recorded_draws_hold_here(slug):
        pytest.skip(SKIP_OTHER_CPU)
    _, network, _, _ = built(slug)
    assert_file_matches(network, expected(slug))


@pytest.mark.parametrize("slug", CASES)
def test_host_attributes(slug):
    _, network, _, _ = built(slug)
    for key, value in expected(slug)["host_attributes"].items():
        assert getattr(network, key) == value, key


def test_block_weights_equal_upstreams_per_block_regex_lrs():
    """double_lr_weight/single_lr_weight give each parameter the LR upstream gives it with one
    network_reg_lrs regex per block at unet_lr x w (f30; f31 with LoRA+). A block whose weight is 0
    (f31: `linear` starts at 0) has no modules here; upstream builds them and leaves them out of
    every group."""
    for slug in ("f30_reg_lrs_block_weights", "f31_reg_lrs_block_weights_loraplus"):
        spec = case(slug)
        weights = spec["block_weights"]
        args = {k: v for k, v in spec["network_args"].items() if k != "network_reg_lrs"}
        network = create(dict(spec, network_args=dict(args, double_lr_weight=weights["double_spec"], single_lr_weight=weights["single_spec"])))
        groups, descriptions = network.prepare_optimizer_params_with_multiple_te_lrs(spec["text_encoder_lr"], spec["unet_lr"], spec["learning_rate"])
        ours, theirs = lrs_by_name(network, groups), upstream_lrs_by_name(spec["result"])
        assert ours == {name: lr for name, lr in theirs.items() if name in ours}, slug
        assert set(theirs) - set(ours) == set()
        assert sorted(set(spec["result"]["params_without_group"])) == sorted(
            f"{m['name']}.{part}.weight" for m in spec["result"]["modules"] for part in ("lora_down", "lora_up") if m["name"] not in {x.lora_name for x in network.all_loras}
        )
        assert "unet D03" in descriptions


def test_threshold_pruning_equals_upstreams_block_indices():
    """block_lr_zero_threshold=0.3 on sine/cosine builds exactly the modules (and same-seed tensors)
    that upstream builds with the equivalent train_*_block_indices (f32)."""
    spec = case("f32_threshold_as_indices")
    weights = spec["block_weights"]
    args = {
        "double_lr_weight": weights["double_spec"],
        "single_lr_weight": weights["single_spec"],
        "block_lr_zero_threshold": str(weights["threshold"]),
    }
    network = create(dict(spec, network_args=args))
    want = spec["result"]["modules"]
    assert [m.lora_name for m in network.all_loras] == [m["name"] for m in want]
    assert tuple(sha256(m.lora_down.weight) for m in network.all_loras) == replayed_init("f32_threshold_as_indices")
    if recorded_draws_hold_here("f32_threshold_as_indices"):
        assert [sha256(m.lora_down.weight) for m in network.all_loras] == [m["down_sha256"] for m in want]
    groups, _ = network.prepare_optimizer_params_with_multiple_te_lrs(spec["text_encoder_lr"], spec["unet_lr"], spec["learning_rate"])
    assert lrs_by_name(network, groups) == upstream_lrs_by_name(spec["result"])


BAD = json.loads((FIGURES / "bad_inputs.json").read_text(encoding="utf-8"))
# Accepted on purpose: lower-case flags mean on (upstream: silently off), conv_dim is a no-op with a
# warning (as upstream), split_qkv works at any width (upstream crashes on the tiny model).
ACCEPTED = {"b21_train_t5xxl_lowercase", "b22_split_qkv_lowercase", "b23_verbose_one", "b28_conv_dim", "b29_split_qkv_tiny_all", "b30_split_qkv_tiny_single"}


@pytest.mark.parametrize("bad", BAD, ids=[b["slug"] for b in BAD])
def test_bad_input_is_a_value_error_naming_key_and_value(bad):
    if bad["slug"] in ACCEPTED:
        create(bad)
        return
    with pytest.raises(NetworkArgError) as error:
        create(bad)
    assert error.value.key == bad["bad_key"]
    assert bad["bad_key"] in str(error.value)
