"""Every recorded upstream case replayed on models rebuilt from the recorded skeletons.

Expected values are figures recorded from the real sd-scripts `networks.lora` (48d368fa); see
tests/fixtures/upstream/README.md. For bad-input cases upstream crashes with a TypeError; we must
either give upstream's result for the sensible spelling or a ValueError naming the key.
"""

import pytest

from lr_weights import lora
from lr_weights.errors import NetworkArgError

from tests.conftest import upstream_case, upstream_case_slugs
from tests.upstream_models import rebuild


def run_case(case):
    te, unet = rebuild(case["model"])
    network = lora.create_network(1.0, case["network_dim"], case["network_alpha"], None, te, unet, neuron_dropout=None, **case["network_args"])
    network.apply_to(te, unet, True, True)
    params, descriptions = network.prepare_optimizer_params(case["text_encoder_lr"], case["unet_lr"], case["learning_rate"], with_descriptions=True)
    return network, params, descriptions


def observed_modules(network):
    return [
        {
            "name": m.lora_name,
            "block": network.block_of(m) if m in network.unet_loras else -1,
            "kind": m.kind,
            "dim": m.lora_dim,
            "alpha": float(m.alpha),
            "down_shape": list(m.lora_down.weight.shape),
            "up_shape": list(m.lora_up.weight.shape),
        }
        for m in network.all_loras
    ]


def observed_groups(network, params, descriptions):
    owner = {}
    for module in network.all_loras:
        for name, param in module.named_parameters():
            owner[id(param)] = (module.lora_name, name.split(".")[0])
    groups = []
    for description, group in zip(descriptions, params):
        names = [owner[id(p)] for p in group["params"]]
        groups.append(
            {
                "description": description,
                "lr": group["lr"],
                "n_tensors": len(group["params"]),
                "n_params": sum(p.numel() for p in group["params"]),
                "param_roles": sorted({role for _, role in names}),
                "module_names": sorted({name for name, _ in names}),
            }
        )
    return groups


def expected_result(case):
    result = case["result"]
    return case.get("sensible_result") if "error" in result else result


@pytest.mark.parametrize("slug", [s for s in upstream_case_slugs() if expected_result(upstream_case(s)) is not None])
def test_case_matches_upstream(slug):
    case = upstream_case(slug)
    expected = expected_result(case)
    network, params, descriptions = run_case(case)

    assert network.block_lr_weight == expected["block_lr_weight"]
    assert observed_modules(network) == expected["modules"]
    assert observed_groups(network, params, descriptions) == expected["groups"]
    extra = [k for k in network.state_dict() if not k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha"))]
    assert extra == expected["extra_state_keys"] == []


@pytest.mark.parametrize("slug", [s for s in upstream_case_slugs() if expected_result(upstream_case(s)) is None])
def test_upstream_crash_is_a_value_error_naming_the_key(slug):
    case = upstream_case(slug)
    with pytest.raises(NetworkArgError) as raised:
        run_case(case)
    assert raised.value.key == case["bad_key"]
    assert case["bad_key"] in str(raised.value)
    assert case["network_args"][case["bad_key"]] in str(raised.value)


def test_module_counts_from_the_contract():
    """CONTRACT §2: SD1 72 + 192, LoCon 278; SD2 TE 138; SDXL 264 (72 + 192) + 722, LoCon 788."""
    expected = {
        ("sd1", False): (72, 192),
        ("sd1", True): (72, 278),
        ("sd2", False): (138, 192),
        ("sdxl", False): (264, 722),
        ("sdxl", True): (264, 788),
    }
    for (model, conv), (n_te, n_unet) in expected.items():
        te, unet = rebuild(model)
        args = {"conv_dim": "4"} if conv else {}
        network = lora.create_network(1.0, 4, 1, None, te, unet, **args)
        assert (len(network.text_encoder_loras), len(network.unet_loras)) == (n_te, n_unet), (model, conv)
    te, unet = rebuild("sdxl")
    network = lora.create_network(1.0, 4, 1, None, te, unet)
    prefixes = [m.lora_name.split("_")[1] for m in network.text_encoder_loras]
    assert prefixes.count("te1") == 72 and prefixes.count("te2") == 192


def test_base_layers_stay_on_meta_and_are_never_read():
    network, _, _ = run_case(upstream_case("p03_sd1_sine_cosine_locon"))
    for module in network.all_loras:
        assert module.base_layer.weight.device.type == "meta"
        assert module.lora_down.weight.device.type == "cpu"
