"""One settings path: each parser rule lives in one module, and the modules import downwards only."""

import ast
import logging
from pathlib import Path

import pytest

from lr_weights.archs import SDXL
from lr_weights.errors import NetworkArgError

ARGS = Path(__file__).resolve().parents[3] / "lr_weights" / "args"
# Lower modules first: each may import only those before it.
ORDER = ("scalars", "keys", "weights", "lbw", "lycoris_args", "settings", "dit_settings")


def _args_imports(name):
    tree = ast.parse((ARGS / f"{name}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lr_weights.args."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("lr_weights.args.")}
    return found


def test_args_modules_import_only_lower_ones():
    present = {p.stem for p in ARGS.glob("*.py")} - {"__init__"}
    assert present == set(ORDER)
    for position, name in enumerate(ORDER):
        upward = _args_imports(name) - set(ORDER[:position])
        assert not upward, f"args/{name}.py imports {sorted(upward)}, which sit above it"


def test_scalar_parsers_live_in_one_module():
    from lr_weights.args import dit_settings, scalars, settings, weights

    for name in ("parse_float", "parse_int", "parse_alpha", "parse_probability", "parse_flag", "parse_ratio", "parse_upstream_flag", "parse_learning_rate"):
        assert hasattr(scalars, name)
        for other in (settings, weights, dit_settings):
            defined = getattr(other, name, None)
            assert defined is None or defined is getattr(scalars, name), f"{other.__name__} has its own {name}"


def test_flux_stack_list_of_the_wrong_length_is_an_error():
    from lr_weights.flux import parse_flux_settings

    with pytest.raises(NetworkArgError) as error:
        parse_flux_settings(None, None, {"double_lr_weight": ",".join(["1"] * 18)})
    message = str(error.value)
    assert "double_lr_weight=" in message and "exactly 19" in message and "got 18" in message
    with pytest.raises(NetworkArgError, match="exactly 38"):
        parse_flux_settings(None, None, {"single_lr_weight": ",".join(["1"] * 39)})


def test_sd_down_list_of_the_wrong_length_keeps_upstreams_pad_with_a_warning(caplog):
    from lr_weights.args.settings import parse_network_settings

    with caplog.at_level(logging.WARNING, logger="lr_weights"):
        settings = parse_network_settings(SDXL, None, None, {"down_lr_weight": "0.5,1,1,1,1,1,1,1,1,1,1,1"})
    assert settings.options.block_lr_weights[SDXL.down_start] == 0.5
    assert any("down_lr_weight has 12 values" in r.getMessage() for r in caplog.records)


def test_a_key_without_a_name_is_an_error():
    from lr_weights.args.settings import parse_network_settings

    with pytest.raises(NetworkArgError, match="'=1'"):
        parse_network_settings(SDXL, None, None, {"": "1"})


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("factor", "abc", "whole number"),
        ("block_size", "0", "whole number >= 1"),
        ("use_tucker", "maybe", "True or False"),
        ("decompose_both", "yes please", "True or False"),
        ("constraint", "x", "a number"),
    ],
)
def test_lycoris_values_are_checked(key, value, fragment):
    from lr_weights.args.lycoris_args import check_lycoris_values

    with pytest.raises(NetworkArgError) as error:
        check_lycoris_values({key: value})
    assert f"{key}={value!r}" in str(error.value) and fragment in str(error.value)


def test_lycoris_values_that_upstream_reads_are_left_as_given():
    from lr_weights.args.lycoris_args import check_lycoris_values

    given = {"factor": "-1", "use_tucker": "False", "decompose_both": "True", "block_size": "4", "algo": "lokr"}
    assert check_lycoris_values(dict(given)) is None


def test_negative_learning_rates_are_refused_by_the_modules_groups():
    from lr_weights.network.param_groups import check_learning_rates

    with pytest.raises(NetworkArgError, match="unet_lr=-0.0001"):
        check_learning_rates(None, -1e-4, None)
