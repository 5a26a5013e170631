"""lr_weights.anima against figures recorded from the real sd-scripts `networks/lora_anima.py`.

tests/fixtures/upstream/anima/: 32 parity cases on a tiny Anima with the real 28 blocks and 6-layer
LLM adapter plus a tiny Qwen3 (rebuilt here from recorded skeletons, no sd-scripts import), and 29
bad inputs. With no new args lr_weights.anima must be upstream: modules in creation order, dims,
alphas, shapes, same-seed initial tensors, per-parameter LRs, group order and descriptions, file
keys and hashes. Block LRs are checked against upstream's per-block regex LRs (LR = unet_lr x w),
the threshold against upstream with the pruned blocks excluded.
"""

from __future__ import annotations

import pytest

from lr_weights import anima
from lr_weights.errors import NetworkArgError

from tests.dit_figures import (
    SKIP_OTHER_CPU,
    Figures,
    assert_file_matches,
    assert_groups_match,
    assert_modules_match,
    lrs_by_name,
    sha256,
    upstream_lrs_by_name,
)


def models(figures: Figures, spec: dict):
    qwen3 = figures.model("tiny_qwen3") if spec.get("text_encoders", "qwen3") == "qwen3" else None
    return [qwen3], figures.model("tiny_anima")


# --network_train_unet_only: upstream creates the Qwen3 modules (they draw from the seed) and
# apply_to drops them, so a02's tensors are a01's DiT tensors.
FIGURES = Figures("anima", anima, models, init_from={"a02_unet_only": "a01_plain"})


@pytest.mark.parametrize("slug", FIGURES.slugs)
def test_modules_dims_shapes_and_same_seed_tensors(slug):
    _, network, _, _ = FIGURES.built(slug)
    result = FIGURES.case(slug)["result"]
    assert_modules_match(network, result, FIGURES.replayed_init(slug))
    if not FIGURES.recorded_draws_hold_here(slug):
        pytest.skip(SKIP_OTHER_CPU)
    assert [sha256(m.lora_down.weight) for m in network.all_loras] == [m["down_sha256"] for m in result["modules"]]


@pytest.mark.parametrize("slug", FIGURES.slugs)
def test_per_parameter_learning_rates_and_groups(slug):
    _, network, groups, descriptions = FIGURES.built(slug)
    assert_groups_match(network, groups, descriptions, FIGURES.case(slug)["result"])


@pytest.mark.parametrize("slug", FIGURES.slugs)
def test_state_dict_and_file_match(slug):
    if not FIGURES.recorded_draws_hold_here(slug):
        pytest.skip(SKIP_OTHER_CPU)
    _, network, _, _ = FIGURES.built(slug)
    assert_file_matches(network, FIGURES.case(slug)["result"])


@pytest.mark.parametrize("slug", FIGURES.slugs)
def test_host_attributes(slug):
    _, network, _, _ = FIGURES.built(slug)
    recorded = FIGURES.case(slug)["result"]["host_attributes"]
    for key in ("train_llm_adapter", "loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio"):
        assert getattr(network, key) == recorded[key], key


def block_weight_args(spec: dict) -> dict:
    weights = spec["block_weights"]
    args = {k: v for k, v in spec["network_args"].items() if k not in ("network_reg_lrs", "exclude_patterns")}
    return dict(args, block_lr_weight=weights["block_spec"], llm_adapter_lr_weight=weights["llm_adapter_spec"])


@pytest.mark.parametrize("slug", ["a20_reg_lrs_block_weights", "a21_reg_lrs_block_weights_loraplus"])
def test_block_weights_equal_upstreams_per_block_regex_lrs(slug):
    """block_lr_weight / llm_adapter_lr_weight give each parameter the LR upstream gives it with one
    network_reg_lrs regex per block at unet_lr x w. A block whose weight is 0 (sine's B00, linear's
    A00, cosine's B27) has no modules here; upstream builds them and leaves them out of every group."""
    spec = FIGURES.case(slug)
    network = FIGURES.create(spec, block_weight_args(spec))
    groups, descriptions = FIGURES.groups_of(spec, network)
    ours, theirs = lrs_by_name(network, groups), upstream_lrs_by_name(spec["result"])
    assert ours == {name: lr for name, lr in theirs.items() if name in ours}
    assert set(theirs) - set(ours) == set()
    ours_modules = {m.lora_name for m in network.all_loras}
    left_out = {f"{m['name']}.{part}.weight" for m in spec["result"]["modules"] for part in ("lora_down", "lora_up") if m["name"] not in ours_modules}
    assert left_out == set(spec["result"]["params_without_group"])
    # first principles: every block's modules at exactly unet_lr x its weight
    weights = spec["block_weights"]
    for module in network.unet_loras:
        name = module.lora_name
        kind, index = ("llm_adapter", int(name.split("_")[5])) if "llm_adapter" in name else ("block", int(name.split("_")[3]))
        plus = spec["network_args"].get("loraplus_unet_lr_ratio")
        assert ours[f"{name}.lora_down.weight"] == spec["unet_lr"] * weights[kind][index]
        assert ours[f"{name}.lora_up.weight"] == spec["unet_lr"] * weights[kind][index] * (float(plus) if plus else 1.0)
    assert "unet B07" in descriptions and "unet A03" in descriptions


def test_threshold_equals_upstream_with_the_pruned_blocks_excluded():
    """block_lr_zero_threshold=0.3 builds exactly the modules (and same-seed tensors) upstream builds
    with exclude_patterns of the blocks at or under it, each at upstream's per-block regex LR (a22)."""
    slug = "a22_threshold_as_excludes"
    spec = FIGURES.case(slug)
    args = dict(block_weight_args(spec), block_lr_zero_threshold=str(spec["block_weights"]["threshold"]))
    network = FIGURES.create(spec, args)
    assert_modules_match(network, spec["result"], FIGURES.replayed_init(slug))
    groups, _ = FIGURES.groups_of(spec, network)
    assert lrs_by_name(network, groups) == upstream_lrs_by_name(spec["result"])


def test_reg_lrs_beat_block_weights():
    """network_reg_lrs stays absolute: a module it matches keeps that LR whatever its block's weight."""
    spec = FIGURES.case("a01_plain")
    network = FIGURES.create(spec, {"block_lr_weight": "0.5", "network_reg_lrs": r"blocks\.3\..*=3e-4"})
    lrs = lrs_by_name(network, FIGURES.groups_of(spec, network)[0])
    assert lrs["lora_unet_blocks_3_mlp_layer1.lora_down.weight"] == 3e-4
    assert lrs["lora_unet_blocks_4_mlp_layer1.lora_down.weight"] == spec["unet_lr"] * 0.5


# Accepted on purpose (docs/anima.md): flags read yes/1 as on (upstream: silently off), and our own
# new arg. Every other upstream assert, crash or silent ignore is a NetworkArgError naming the key.
ACCEPTED = {"b01_train_llm_adapter_yes", "b02_train_llm_adapter_one", "b21_verbose_one", "b23_block_lr_weight"}


@pytest.mark.parametrize("bad", FIGURES.bad_inputs, ids=[b["slug"] for b in FIGURES.bad_inputs])
def test_bad_input_is_a_value_error_naming_key_and_value(bad):
    if bad["slug"] in ACCEPTED:
        FIGURES.create(bad)
        return
    with pytest.raises(NetworkArgError) as error:
        FIGURES.create(bad)
    assert error.value.key == bad["bad_key"]
    assert bad["bad_key"] in str(error.value)
