"""lr_weights.hunyuan_image against figures recorded from the real sd-scripts `networks/lora_hunyuan_image.py`.

tests/fixtures/upstream/hunyuan_image/: 20 parity cases on a tiny HunyuanImage-2.1 with the real 20
double / 40 single blocks (rebuilt here from the recorded skeleton, no sd-scripts import), 29 bad
inputs, and split_qkv at the real width. With no new args lr_weights.hunyuan_image must be upstream;
block LRs are checked against upstream's per-block regex LRs (LR = unet_lr x w), the threshold
against upstream with the pruned blocks' dims set to 0.
"""

from __future__ import annotations

import json

import pytest
import torch

from lr_weights import hunyuan_image
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
    return [None, None], figures.model("tiny_hunyuan_image")


FIGURES = Figures("hunyuan_image", hunyuan_image, models)


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
    for key in ("split_qkv", "loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio"):
        assert getattr(network, key) == recorded[key], key
    assert network.text_encoder_loras == []


def block_weight_args(spec: dict) -> dict:
    weights = spec["block_weights"]
    args = {k: v for k, v in spec["network_args"].items() if k not in ("network_reg_lrs", "network_reg_dims")}
    return dict(args, double_lr_weight=weights["double_spec"], single_lr_weight=weights["single_spec"])


@pytest.mark.parametrize("slug", ["h10_reg_lrs_block_weights", "h11_reg_lrs_block_weights_loraplus"])
def test_block_weights_equal_upstreams_per_block_regex_lrs(slug):
    """double_lr_weight / single_lr_weight give each parameter the LR upstream gives it with one
    network_reg_lrs regex per block at unet_lr x w; a block of weight 0 has no modules here (upstream
    builds them and leaves them out of every group)."""
    spec = FIGURES.case(slug)
    network = FIGURES.create(spec, block_weight_args(spec))
    groups, descriptions = FIGURES.groups_of(spec, network)
    ours, theirs = lrs_by_name(network, groups), upstream_lrs_by_name(spec["result"])
    assert ours == {name: lr for name, lr in theirs.items() if name in ours}
    assert set(theirs) - set(ours) == set()
    ours_modules = {m.lora_name for m in network.all_loras}
    left_out = {f"{m['name']}.{part}.weight" for m in spec["result"]["modules"] for part in ("lora_down", "lora_up") if m["name"] not in ours_modules}
    assert left_out == set(spec["result"]["params_without_group"])
    weights = spec["block_weights"]
    plus = float(spec["network_args"].get("loraplus_unet_lr_ratio", 1.0))
    for module in network.unet_loras:
        kind, index = module.lora_name.split("_")[2], int(module.lora_name.split("_")[4])
        assert ours[f"{module.lora_name}.lora_down.weight"] == spec["unet_lr"] * weights[kind][index]
        assert ours[f"{module.lora_name}.lora_up.weight"] == spec["unet_lr"] * weights[kind][index] * plus
    assert "unet D03" in descriptions and "unet S12" in descriptions


def test_threshold_equals_upstream_with_the_pruned_blocks_dropped():
    """block_lr_zero_threshold=0.3 builds exactly the modules (and same-seed tensors) upstream builds
    with network_reg_dims=0 for the blocks at or under it, each at the per-block regex LR (h12)."""
    slug = "h12_threshold_as_reg_dims"
    spec = FIGURES.case(slug)
    network = FIGURES.create(spec, dict(block_weight_args(spec), block_lr_zero_threshold=str(spec["block_weights"]["threshold"])))
    assert_modules_match(network, spec["result"], FIGURES.replayed_init(slug))
    groups, _ = FIGURES.groups_of(spec, network)
    assert lrs_by_name(network, groups) == upstream_lrs_by_name(spec["result"])


def test_split_qkv_at_real_width_is_upstreams_modules():
    """split_qkv on the real-width HunyuanImage (meta base layers, recorded D00/S00 figures): the same
    parts and shapes; the merged file keys in upstream's order. Upstream keeps each part's alpha in
    the merged file; we save alpha x parts (docs/flux.md, as for FLUX), so alphas are not compared."""
    from lr_weights.models.reference import build_reference_model

    recorded = json.loads((FIGURES.folder / "split_qkv_real_width.json").read_text(encoding="utf-8"))
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


# Accepted on purpose (docs/hunyuan_image.md): lower-case flags mean on (upstream: silently off),
# split_qkv works at any width (upstream's split sizes are hard-coded, so it fails at tiny width),
# conv_dim is a no-op with a warning (as upstream), and our own new arg.
ACCEPTED = {"b01_split_qkv_tiny", "b02_split_qkv_lowercase", "b03_verbose_lowercase", "b27_double_lr_weight"}


@pytest.mark.parametrize("bad", FIGURES.bad_inputs, ids=[b["slug"] for b in FIGURES.bad_inputs])
def test_bad_input_is_a_value_error_naming_key_and_value(bad):
    if bad["slug"] in ACCEPTED:
        FIGURES.create(bad)
        return
    with pytest.raises(NetworkArgError) as error:
        FIGURES.create(bad)
    assert error.value.key == bad["bad_key"]
    assert bad["bad_key"] in str(error.value)
