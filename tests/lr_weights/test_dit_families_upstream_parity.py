"""lr_weights.anima and lr_weights.hunyuan_image against figures recorded from the real sd-scripts
`networks/lora_anima.py` and `networks/lora_hunyuan_image.py` (tests/fixtures/upstream/anima/,
hunyuan_image/; the tiny models are rebuilt from the recorded skeletons, no sd-scripts import).

- Anima: 32 cases on a tiny Anima with the real 28 blocks and 6-layer LLM adapter plus a tiny
  Qwen3, 29 bad inputs. HunyuanImage: 20 cases with the real 20 double / 40 single blocks, 29 bad inputs.
- With no new args the module is upstream: modules in creation order, dims, alphas, shapes, same-seed
  initial tensors, per-parameter LRs, group order and descriptions, file keys and hashes.
- Block LRs against upstream's per-block `network_reg_lrs` regexes at unet_lr x w, and from first
  principles; the threshold against upstream with the pruned blocks removed (Anima: excluded by
  exclude_patterns, HunyuanImage: network_reg_dims=0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, FrozenSet, Tuple

import pytest

from lr_weights import anima, hunyuan_image
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


@dataclass(frozen=True)
class Family:
    figures: Figures
    host_keys: Tuple[str, ...]  # attributes a host may read, compared with upstream's
    # the case's upstream emulation of block weights (regex LRs, excludes / reg dims) replaced by our args
    emulation_keys: Tuple[str, ...]
    stack_specs: Tuple[Tuple[str, str], ...]  # (our LR-weight arg, the block_weights field with its preset)
    block_weight_cases: Tuple[str, ...]
    threshold_case: str
    locate: Callable[[str], Tuple[str, int]]  # DiT module name -> (block_weights field, index)
    # Accepted on purpose (docs/<family>.md): flags read yes/1/true as on (upstream: silently off),
    # split_qkv at any width, our own new args. Every other upstream assert, crash or silent ignore
    # is a NetworkArgError naming the key.
    accepted: FrozenSet[str]


def anima_models(figures: Figures, spec: dict):
    qwen3 = figures.model("tiny_qwen3") if spec.get("text_encoders", "qwen3") == "qwen3" else None
    return [qwen3], figures.model("tiny_anima")


def hunyuan_models(figures: Figures, spec: dict):
    return [None, None], figures.model("tiny_hunyuan_image")


def anima_locate(name: str) -> Tuple[str, int]:
    fields = name.split("_")
    return ("llm_adapter", int(fields[5])) if "llm_adapter" in name else ("block", int(fields[3]))


FAMILIES = {
    "anima": Family(
        # --network_train_unet_only: upstream creates the Qwen3 modules (they draw from the seed) and
        # apply_to drops them, so a02's tensors are a01's DiT tensors.
        figures=Figures("anima", anima, anima_models, init_from={"a02_unet_only": "a01_plain"}),
        host_keys=("train_llm_adapter", "loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio"),
        emulation_keys=("network_reg_lrs", "exclude_patterns"),
        stack_specs=(("block_lr_weight", "block"), ("llm_adapter_lr_weight", "llm_adapter")),
        block_weight_cases=("a20_reg_lrs_block_weights", "a21_reg_lrs_block_weights_loraplus"),
        threshold_case="a22_threshold_as_excludes",
        locate=anima_locate,
        accepted=frozenset({"b01_train_llm_adapter_yes", "b02_train_llm_adapter_one", "b21_verbose_one", "b23_block_lr_weight"}),
    ),
    "hunyuan_image": Family(
        figures=Figures("hunyuan_image", hunyuan_image, hunyuan_models),
        host_keys=("split_qkv", "loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio"),
        emulation_keys=("network_reg_lrs", "network_reg_dims"),
        stack_specs=(("double_lr_weight", "double"), ("single_lr_weight", "single")),
        block_weight_cases=("h10_reg_lrs_block_weights", "h11_reg_lrs_block_weights_loraplus"),
        threshold_case="h12_threshold_as_reg_dims",
        locate=lambda name: (name.split("_")[2], int(name.split("_")[4])),
        accepted=frozenset({"b01_split_qkv_tiny", "b02_split_qkv_lowercase", "b03_verbose_lowercase", "b27_double_lr_weight"}),
    ),
}
CASES = [(name, slug) for name, family in FAMILIES.items() for slug in family.figures.slugs]
BAD = [(name, bad) for name, family in FAMILIES.items() for bad in family.figures.bad_inputs]
BLOCK_WEIGHT_CASES = [(name, slug) for name, family in FAMILIES.items() for slug in family.block_weight_cases]


@pytest.mark.parametrize("family,slug", CASES)
def test_modules_dims_shapes_and_same_seed_tensors(family, slug):
    figures = FAMILIES[family].figures
    _, network, _, _ = figures.built(slug)
    result = figures.case(slug)["result"]
    assert_modules_match(network, result, figures.replayed_init(slug))
    if not figures.recorded_draws_hold_here(slug):
        pytest.skip(SKIP_OTHER_CPU)
    assert [sha256(m.lora_down.weight) for m in network.all_loras] == [m["down_sha256"] for m in result["modules"]]


@pytest.mark.parametrize("family,slug", CASES)
def test_per_parameter_learning_rates_and_groups(family, slug):
    figures = FAMILIES[family].figures
    _, network, groups, descriptions = figures.built(slug)
    assert_groups_match(network, groups, descriptions, figures.case(slug)["result"])


@pytest.mark.parametrize("family,slug", CASES)
def test_state_dict_and_file_match(family, slug):
    figures = FAMILIES[family].figures
    if not figures.recorded_draws_hold_here(slug):
        pytest.skip(SKIP_OTHER_CPU)
    _, network, _, _ = figures.built(slug)
    assert_file_matches(network, figures.case(slug)["result"])


@pytest.mark.parametrize("family,slug", CASES)
def test_host_attributes(family, slug):
    figures = FAMILIES[family].figures
    _, network, _, _ = figures.built(slug)
    recorded = figures.case(slug)["result"]["host_attributes"]
    for key in FAMILIES[family].host_keys:
        assert getattr(network, key) == recorded[key], key


def block_weight_args(family: Family, spec: dict) -> dict:
    weights = spec["block_weights"]
    args = {k: v for k, v in spec["network_args"].items() if k not in family.emulation_keys}
    return dict(args, **{key: weights[f"{field}_spec"] for key, field in family.stack_specs})


@pytest.mark.parametrize("family,slug", BLOCK_WEIGHT_CASES)
def test_block_weights_equal_upstreams_per_block_regex_lrs(family, slug):
    """The LR-weight lists give each parameter the LR upstream gives it with one network_reg_lrs regex
    per block at unet_lr x w, which is unet_lr x w (x the LoRA+ ratio) from first principles. A block
    whose weight is 0 has no modules here; upstream builds them and leaves them out of every group."""
    spec_family = FAMILIES[family]
    figures = spec_family.figures
    spec = figures.case(slug)
    network = figures.create(spec, block_weight_args(spec_family, spec))
    groups, descriptions = figures.groups_of(spec, network)
    ours, theirs = lrs_by_name(network, groups), upstream_lrs_by_name(spec["result"])
    assert ours == {name: lr for name, lr in theirs.items() if name in ours}
    assert set(theirs) - set(ours) == set()
    ours_modules = {m.lora_name for m in network.all_loras}
    left_out = {f"{m['name']}.{part}.weight" for m in spec["result"]["modules"] for part in ("lora_down", "lora_up") if m["name"] not in ours_modules}
    assert left_out == set(spec["result"]["params_without_group"])
    plus = float(spec["network_args"].get("loraplus_unet_lr_ratio", 1.0))
    for module in network.unet_loras:
        field, index = spec_family.locate(module.lora_name)
        weight = spec["block_weights"][field][index]
        assert ours[f"{module.lora_name}.lora_down.weight"] == spec["unet_lr"] * weight
        assert ours[f"{module.lora_name}.lora_up.weight"] == spec["unet_lr"] * weight * plus
    assert len({d for d in descriptions if d.startswith("unet ")}) > 2 * len(spec_family.stack_specs)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_threshold_equals_upstream_with_the_pruned_blocks_removed(family):
    """block_lr_zero_threshold=0.3 builds exactly the modules (and same-seed tensors) upstream builds
    without the blocks at or under it, each at upstream's per-block regex LR."""
    spec_family = FAMILIES[family]
    figures = spec_family.figures
    slug = spec_family.threshold_case
    spec = figures.case(slug)
    network = figures.create(spec, dict(block_weight_args(spec_family, spec), block_lr_zero_threshold=str(spec["block_weights"]["threshold"])))
    assert_modules_match(network, spec["result"], figures.replayed_init(slug))
    groups, _ = figures.groups_of(spec, network)
    assert lrs_by_name(network, groups) == upstream_lrs_by_name(spec["result"])


@pytest.mark.parametrize("family,bad", BAD, ids=[f"{name}-{bad['slug']}" for name, bad in BAD])
def test_bad_input_is_a_value_error_naming_key_and_value(family, bad):
    figures = FAMILIES[family].figures
    if bad["slug"] in FAMILIES[family].accepted:
        figures.create(bad)
        return
    with pytest.raises(NetworkArgError) as error:
        figures.create(bad)
    assert error.value.key == bad["bad_key"]
    assert bad["bad_key"] in str(error.value)
