"""Block LR weight expansion: upstream's recorded expansions, and our deviations (CONTRACT §4, §7)."""

import json
import math

import pytest

from lr_weights.archs.blocks import SD, SDXL
from lr_weights.errors import NetworkArgError
from lr_weights.lora import get_block_lr_weight
from lr_weights.args.weights import parse_down_up_spec, preset_values, resolve_block_lr_weights

from tests.conftest import UPSTREAM

PRESETS = json.loads((UPSTREAM / "presets.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("entry", PRESETS["newest"], ids=lambda e: f"{e['family']}-{e['preset']}")
def test_newest_preset_expansions(entry):
    is_sdxl = entry["family"] == "sdxl"
    arch = SDXL if is_sdxl else SD
    raw = resolve_block_lr_weights(arch, entry["preset"], None, None, PRESETS["raw_threshold"])
    assert list(raw[arch.down_start : arch.mid_start]) == entry["values"]
    thresholded = resolve_block_lr_weights(arch, entry["preset"], None, None, 0)
    assert list(thresholded[arch.down_start : arch.mid_start]) == entry["values_threshold_0"]
    assert get_block_lr_weight(is_sdxl, entry["preset"], None, entry["preset"], 0.0) == entry["flat_down_and_up_threshold_0"]


@pytest.mark.parametrize("entry", PRESETS["v065"], ids=lambda e: repr(e["args"]))
def test_gui_era_four_argument_signature(entry):
    assert list(get_block_lr_weight(*entry["args"])) == entry["returned"]


def test_seed_example_from_the_contract():
    # CONTRACT §4: upstream's printed expansion of sine+.25.
    expected = [0.25, 0.39231483827328517, 0.5317325568414297, 0.6654150130018863, 0.7906408174555976, 0.904860733945285,
                1.0057495743542582, 1.091253532831181, 1.1596319953545184, 1.2094929736144975, 1.2398214418809328, 1.25]
    assert parse_down_up_spec("down_lr_weight", "sine+.25", 12) == expected


def test_presets_from_first_principles():
    n = 9
    assert preset_values("sine", n) == pytest.approx([math.sin(math.pi * k / (n - 1) / 2) for k in range(n)])
    assert preset_values("cosine", n) == list(reversed(preset_values("sine", n)))
    assert preset_values("linear", n, 0.5) == pytest.approx([k / (n - 1) + 0.5 for k in range(n)])
    assert preset_values("zeros", n, 0.25) == [0.25] * n


def test_single_number_applies_to_every_block():
    # Upstream crashes with an unrelated TypeError (CONTRACT §7.1).
    assert parse_down_up_spec("down_lr_weight", "0.5", 12) == [0.5] * 12


def test_minus_offset():
    # CONTRACT §7.3: upstream knows only "+"; "sine-0.25" means sine with offset -0.25.
    assert parse_down_up_spec("up_lr_weight", "sine-0.25", 12) == pytest.approx(preset_values("sine", 12, -0.25))


@pytest.mark.parametrize(
    "text",
    ["foo", "sine+", "sine-", "sin+.25", "1,x,1", "nan", "inf", "1,inf", "sine+abc", ""],
)
def test_bad_specs_name_key_and_value(text):
    with pytest.raises(NetworkArgError) as raised:
        parse_down_up_spec("down_lr_weight", text, 12)
    message = str(raised.value)
    assert "down_lr_weight" in message and repr(text) in message


def test_only_one_long_list_is_truncated():
    # CONTRACT §7.2: upstream crashes on None when only one of down/up is too long.
    flat = resolve_block_lr_weights(SD, ",".join(["0.5"] * 14), None, None)
    assert flat[:12] == (0.5,) * 12 and flat[12:] == (1.0,) * 13


def test_lists_not_given_are_never_thresholded():
    flat = resolve_block_lr_weights(SD, "sine+.25", None, None, 5)
    assert flat[:12] == (0.0,) * 12 and flat[12:] == (1.0,) * 13


def test_short_list_is_padded_with_ones_and_warns(caplog):
    flat = resolve_block_lr_weights(SD, "0,0.5,2", None, None)
    assert flat[:12] == (0.0, 0.5, 2.0) + (1.0,) * 9
    assert "down_lr_weight" in caplog.text and "filled with 1.0" in caplog.text


def test_sdxl_flat_list_has_fixed_ends():
    flat = resolve_block_lr_weights(SDXL, "zeros+0.5", "1,0,1", "linear")
    assert len(flat) == 23 and flat[0] == 1.0 and flat[22] == 1.0
    assert flat[1:10] == (0.5,) * 9 and flat[10:13] == (1.0, 0.0, 1.0)
