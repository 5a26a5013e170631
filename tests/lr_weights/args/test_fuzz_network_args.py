"""Property-based tests over every network arg of both modules and the CLI's input formats.

Each input either parses to exactly what the documented rules say (README "Network args",
CONTRACT §4/§7) or raises a ValueError (NetworkArgError) that names the key and the value. No other
exception type may escape `create_network`/`create_network_from_weights`: the host retries
`prepare_optimizer_params` on TypeError, and users catch ValueError.

Example counts come from the hypothesis profile in tests/conftest.py: small in CI, large with
LRW_HYPOTHESIS_PROFILE=campaign.
"""

import logging
import math

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lr_weights import dylora, lora  # noqa: E402
from lr_weights.archs.blocks import SD, SDXL  # noqa: E402
from lr_weights.errors import NetworkArgError  # noqa: E402
from lr_weights.args.keys import GUI_ALIASES, KNOWN_KEYS  # noqa: E402
from lr_weights.args.settings import parse_network_settings  # noqa: E402
from lr_weights.models.tiny import UNetConfig, build_tiny_sd  # noqa: E402
from lr_weights.args.weights import PRESET_NAMES  # noqa: E402

from tests.tolerances import fp_tolerance  # noqa: E402

# Costly examples (building a network) run a fraction of the profile's count.
FEW = settings(max_examples=max(8, settings.default.max_examples // 5))

ARCHS = st.sampled_from([SD, SDXL])
MODULES = st.sampled_from([lora, dylora])
ALL_KEYS = sorted(KNOWN_KEYS | set(GUI_ALIASES))

# ---- what users type ---------------------------------------------------------------------------

FINITE = st.one_of(
    st.floats(-10, 10, allow_nan=False),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, 0.5, 1e-300, 1e300, -1e300, 5e-324]),
)
SPACE = st.sampled_from(["", " ", "  ", "\t"])
SPECIAL = st.sampled_from(
    ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e309", "-1e400", "1e-400", "0x10", "1_0", "١٢", "１", "\u00a0", "\u200b1", "1,", ",", ",,",
     "+", "-", ".", "e5", "None", "none", "True", "[1, 2]", "sine", "sine+", "sine-", "cosine+.25", "linear-1e309", "zeros+nan", "reverse_linear",
     "9" * 5000, "-" + "9" * 40, "1" * 400 + ".5", "=", "a=b", '"1"', "'1'", "1 2", "1;2", "sine+0.5,1"]
)
TEXT = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(SPECIAL, st.sampled_from(list("0123456789.,+-eE _x")), FINITE.map(repr)), max_size=30).map("".join),
    st.lists(st.one_of(SPECIAL, FINITE.map(repr), st.integers(-(10**30), 10**30).map(str)), max_size=30).map(",".join),
    SPECIAL,
)
ANY_VALUE = st.one_of(TEXT, st.none(), st.booleans(), st.integers(-(10**40), 10**40), st.floats(), st.lists(st.floats(), max_size=30), st.binary(max_size=8))


def _number_text(value: float, data) -> str:
    """A text that float() reads as exactly `value`, in one of the ways people write numbers."""
    forms = [repr(value), f"{value:.17g}", f"{value:.17e}", f"{value:.17E}"]
    if value == int(value) and abs(value) < 1e15:
        forms.append(str(int(value)))
    text = data.draw(st.sampled_from(forms))
    if text.startswith("0.") and data.draw(st.booleans()):
        text = text[1:]  # ".25"
    return data.draw(SPACE) + text + data.draw(SPACE)


def _quiet():
    return logging.disable(logging.CRITICAL)


@pytest.fixture(autouse=True)
def _no_log_noise():
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def _expect_named(error: NetworkArgError, keys, value=None):
    assert isinstance(error, NetworkArgError), repr(error)
    assert error.key in keys, (error.key, keys)
    assert error.key in str(error)
    if value is not None and error.key == keys[0]:
        # The value as given, or as the text that was parsed (str() of it, stripped).
        forms = (repr(value), str(value), repr(str(value).strip()), str(value).strip())
        assert any(form in str(error) for form in forms), (value, str(error))


def _threshold(values, threshold):
    return [w if w > threshold else 0.0 for w in values]


def _fit(values, n):
    return (values + [1.0] * n)[:n]


# ---- down/up/mid lists, presets and single numbers ------------------------------------------------


@given(ARCHS, st.sampled_from(["down_lr_weight", "up_lr_weight", "mid_lr_weight"]), st.lists(st.one_of(st.none(), FINITE), min_size=2, max_size=30), st.data())
def test_number_lists_parse_by_the_rules(arch, key, entries, data):
    # Comma list: an empty entry means 0, a short list is padded with 1.0, a long one truncated,
    # then every weight <= the threshold (default 0) becomes 0.
    text = ",".join("" if v is None else _number_text(v, data) for v in entries)
    given_threshold = data.draw(st.one_of(st.none(), st.floats(-2, 2)))
    args = {key: text}
    if given_threshold is not None:
        args["block_lr_zero_threshold"] = repr(given_threshold)
    n = arch.num_mid if key == "mid_lr_weight" else arch.num_down
    start = {"down_lr_weight": arch.down_start, "mid_lr_weight": arch.mid_start, "up_lr_weight": arch.up_start}[key]
    expected = _threshold(_fit([0.0 if v is None else v for v in entries], n), 0.0 if given_threshold is None else given_threshold)
    try:
        resolved = parse_network_settings(arch, 4, 1, args)
    except NetworkArgError as error:
        # Only a negative weight let through by a negative threshold is refused.
        assert any(w < 0 for w in expected), error
        _expect_named(error, (key,), text)
        return
    assert all(w >= 0 for w in expected)
    flat = resolved.options.block_lr_weights
    assert list(flat[start : start + n]) == expected
    assert all(w == 1.0 for i, w in enumerate(flat) if not start <= i < start + n)
    assert all((resolved.block_dims[i] == 0) == (flat[i] == 0) for i in range(arch.num_blocks))


@given(ARCHS, st.sampled_from(["down_lr_weight", "up_lr_weight"]), st.sampled_from(PRESET_NAMES), st.sampled_from(["", "+", "-"]), st.floats(0, 5), st.data())
def test_presets_follow_their_formulas(arch, key, name, sign, offset, data):
    n = arch.num_down
    text = name if sign == "" else name + sign + _number_text(offset, data).strip()
    b = 0.0 if sign == "" else (offset if sign == "+" else -offset)
    ramp = [k / (n - 1) for k in range(n)]
    curve = {
        "sine": [math.sin(math.pi * t / 2) for t in ramp],
        "cosine": [math.sin(math.pi * t / 2) for t in reversed(ramp)],
        "linear": ramp,
        "reverse_linear": list(reversed(ramp)),
        "zeros": [0.0] * n,
    }[name]
    expected = _threshold([v + b for v in curve], 0.0)
    flat = parse_network_settings(arch, 4, 1, {key: text}).options.block_lr_weights
    start = arch.down_start if key == "down_lr_weight" else arch.up_start
    # Per value, in float64: the ramp k/(n-1), π·t, sin (libm: within an ulp; its argument error
    # passes with |cos| <= 1) and the offset add — under 8 roundings on a scale of 1 + |offset|
    # (tests/tolerances.py); near 0 the threshold can only zero a value already within that bound.
    tolerance = fp_tolerance(torch.float64, 8, 1.0 + abs(b))
    assert list(flat[start : start + n]) == pytest.approx(expected, rel=0, abs=tolerance)


@given(ARCHS, st.sampled_from(["down_lr_weight", "up_lr_weight"]), FINITE, st.data())
def test_a_single_number_applies_to_every_block(arch, key, value, data):
    text = _number_text(value, data)
    flat = parse_network_settings(arch, 4, 1, {key: text}).options.block_lr_weights
    start = arch.down_start if key == "down_lr_weight" else arch.up_start
    assert list(flat[start : start + arch.num_down]) == [value if value > 0 else 0.0] * arch.num_down


# ---- per-block dims and alphas, scalars -------------------------------------------------------------


@given(ARCHS, st.sampled_from(["block_dims", "conv_block_dims"]), st.lists(st.integers(0, 10**6), min_size=1, max_size=30), st.data())
def test_block_dims_need_exactly_one_whole_number_per_block(arch, key, dims, data):
    text = ",".join(data.draw(SPACE) + str(d) + data.draw(SPACE) for d in dims)
    try:
        resolved = parse_network_settings(arch, 4, 1, {key: text})
    except NetworkArgError as error:
        assert len(dims) != arch.num_blocks
        _expect_named(error, (key,), text)
        assert f"exactly {arch.num_blocks}" in str(error)
        return
    assert len(dims) == arch.num_blocks
    assert getattr(resolved, key) == tuple(dims)


@given(ARCHS, st.sampled_from(["block_alphas", "conv_block_alphas"]), st.lists(FINITE, min_size=1, max_size=30), st.data())
def test_block_alphas_need_one_number_ge_0_per_block(arch, key, alphas, data):
    text = ",".join(_number_text(a, data) for a in alphas)
    args = {key: text, "conv_dim": "4"}
    try:
        resolved = parse_network_settings(arch, 4, 1, args)
    except NetworkArgError as error:
        assert len(alphas) != arch.num_blocks or any(a < 0 for a in alphas)
        _expect_named(error, (key,), text)
        return
    assert len(alphas) == arch.num_blocks and all(a >= 0 for a in alphas)
    assert getattr(resolved, key) == tuple(alphas)


SCALARS = {
    # key: (valid?, how it is stored)
    "conv_dim": (lambda v: v == int(v) and v >= 1, lambda s: s.conv_dim),
    "conv_alpha": (lambda v: v >= 0, lambda s: s.conv_alpha),
    "rank_dropout": (lambda v: 0 <= v < 1, lambda s: s.options.rank_dropout),
    "module_dropout": (lambda v: 0 <= v < 1, lambda s: s.options.module_dropout),
    "dropout": (lambda v: 0 <= v < 1, lambda s: s.options.dropout),
    "loraplus_unet_lr_ratio": (lambda v: v > 0, lambda s: s.options.loraplus_unet_ratio),
    "loraplus_text_encoder_lr_ratio": (lambda v: v > 0, lambda s: s.options.loraplus_text_encoder_ratio),
    "loraplus_lr_ratio": (lambda v: v > 0, lambda s: s.options.loraplus_unet_ratio),
}


def _is_int_text(text):
    try:
        int(text)
    except ValueError:
        return False
    return True


@given(ARCHS, st.sampled_from(sorted(SCALARS)), st.one_of(FINITE, st.integers(-5, 10**6).map(float)), st.data())
def test_scalars_parse_or_name_the_key(arch, key, value, data):
    valid, stored = SCALARS[key]
    text = str(int(value)) if key == "conv_dim" and value == int(value) and abs(value) < 1e18 else _number_text(value, data)
    args = {key: text}
    if key == "conv_alpha":
        args["conv_dim"] = "4"
    try:
        resolved = parse_network_settings(arch, 4, 1, args)
    except NetworkArgError as error:
        # conv_dim is a whole number in integer syntax: "1e+300" or "4.0" is refused even though integral.
        assert not valid(value) or (key == "conv_dim" and not _is_int_text(text)), (key, text)
        _expect_named(error, (key,), text)
        return
    assert valid(value)
    assert stored(resolved) == value


@given(st.one_of(st.integers(-(10**20), 10**20), ANY_VALUE), st.one_of(FINITE, ANY_VALUE))
@example(4.0, 1.0)
@example(True, None)
@example(10**30, 1.0)
def test_network_dim_and_alpha(dim, alpha):
    try:
        resolved = parse_network_settings(SD, dim, alpha, {})
    except NetworkArgError as error:
        assert error.key in ("network_dim", "network_alpha")
        return
    assert resolved.dim >= 1 and resolved.alpha >= 0 and math.isfinite(resolved.alpha)
    if isinstance(dim, int) and not isinstance(dim, bool):
        assert resolved.dim == dim


# ---- anything at all, for every key ---------------------------------------------------------------


@given(ARCHS, st.sampled_from(ALL_KEYS), ANY_VALUE)
@example(SD, "down_lr_weight", "sine+nan")
@example(SD, "block_dims", "9" * 5000)
@example(SDXL, "mid_lr_weight", "1e309")
@example(SD, "lbw_weights", "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,nan")
def test_any_value_for_any_key_parses_or_names_key_and_value(arch, key, value):
    args = {key: value}
    if key in ("conv_block_alphas", "conv_alphas", "conv_alpha"):
        args["conv_dim"] = "4"
    try:
        parse_network_settings(arch, 4, 1, args)
    except NetworkArgError as error:
        # The key as typed (a GUI alias too: the user typed conv_dims, not conv_block_dims); the
        # threshold rule may name block_lr_zero_threshold when every block ends at weight 0.
        _expect_named(error, (key, "block_lr_zero_threshold"), value)


KWARGS = st.dictionaries(st.sampled_from(ALL_KEYS + ["unit", "algo", "down_lr_weigth"]), ANY_VALUE, max_size=5)


@pytest.fixture(scope="module")
def tiny_models():
    return build_tiny_sd(seed=0, unet=UNetConfig(widths=(8, 16, 16, 16), groups=4, context_dim=16))


@FEW
@given(MODULES, st.one_of(st.none(), st.integers(-2, 40), ANY_VALUE), st.one_of(st.none(), FINITE, ANY_VALUE), KWARGS, st.one_of(st.none(), st.floats(), TEXT))
@example(lora, 4, 1.0, {"down_lr_weight": 0.5}, None)
@example(dylora, 4, 1.0, {"unit": "3"}, None)
def test_create_network_raises_only_value_errors(tiny_models, module, dim, alpha, kwargs, neuron_dropout):
    text_encoder, unet = tiny_models
    try:
        network = module.create_network(1.0, dim, alpha, None, text_encoder, unet, neuron_dropout=neuron_dropout, **kwargs)
    except NetworkArgError:
        return
    groups = network.prepare_optimizer_params(1e-4, 1e-3, 1e-3, with_descriptions=True)
    assert len(groups[0]) == len(groups[1])


@pytest.fixture(scope="module")
def tiny_weights(tiny_models):
    text_encoder, unet = tiny_models
    return lora.create_network(1.0, 4, 2.0, None, text_encoder, unet, conv_dim="2").state_dict()


@FEW
@given(MODULES, KWARGS, st.booleans())
def test_create_network_from_weights_raises_only_value_errors(tiny_models, tiny_weights, module, kwargs, for_inference):
    text_encoder, unet = tiny_models
    weights = dict(tiny_weights)
    try:
        network, returned = module.create_network_from_weights(1.0, None, None, text_encoder, unet, weights_sd=weights, for_inference=for_inference, **kwargs)
    except NetworkArgError:
        return
    assert len(network.all_loras) == sum(k.endswith("lora_down.weight") for k in weights)


TENSOR = st.builds(
    lambda shape, dtype, fill: torch.full(shape, fill if dtype.is_floating_point else -2, dtype=dtype),
    st.lists(st.integers(0, 40), max_size=4).map(tuple),
    st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.int64]),
    st.sampled_from([0.0, 1.0, -2.0, float("nan"), float("inf")]),
)


@FEW
@given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["lora_down.weight", "lora_up.weight", "alpha", "other", ""]), TENSOR), max_size=5), st.booleans())
def test_odd_files_give_a_network_or_a_value_error(tiny_models, tiny_weights, edits, for_inference):
    # Files with missing, extra, mis-shaped, non-finite or non-float tensors.
    text_encoder, unet = tiny_models
    names = sorted({k.split(".")[0] for k in tiny_weights}) + ["lora_unet_unknown", "lora_te_unknown"]
    weights = dict(tiny_weights)
    for which, suffix, tensor in edits:
        weights[names[which % len(names)] + ("." + suffix if suffix else "")] = tensor
    try:
        network, _ = lora.create_network_from_weights(1.0, None, None, text_encoder, unet, weights_sd=weights, for_inference=for_inference)
    except ValueError:
        return
    network.merge_to(text_encoder, None, {}, torch.float32)  # nothing to merge; must not raise
    assert all(m.lora_dim >= 1 and math.isfinite(m.scale) for m in network.all_loras)


@given(st.one_of(st.tuples(st.booleans(), ANY_VALUE, ANY_VALUE, ANY_VALUE, ANY_VALUE), st.tuples(ANY_VALUE, ANY_VALUE, ANY_VALUE, ANY_VALUE)))
def test_public_get_block_lr_weight_raises_only_value_errors(args):
    try:
        lora.get_block_lr_weight(*args)
    except NetworkArgError:
        pass


# ---- CLI input formats -------------------------------------------------------------------------------

lbw = pytest.importorskip("lr_weights.args.lbw")


@given(ARCHS, st.one_of(TEXT, st.sampled_from(sorted(lbw.LBW_PRESETS)), st.lists(FINITE, min_size=10, max_size=27).map(lambda v: ",".join(map(repr, v)))))
@example(SD, "ALL0.5")
@example(SDXL, "1," * 11 + "nan")
def test_lbw_vectors(arch, text):
    try:
        parsed = lbw.parse_lbw(arch, text)
    except NetworkArgError as error:
        _expect_named(error, ("lbw_weights",), text)
        return
    assert len(parsed.blocks) == arch.num_blocks and all(math.isfinite(w) for w in parsed.blocks + (parsed.base,))
    if "," in text and text.strip().upper() not in lbw.LBW_PRESETS:
        values = [float(v) for v in text.split(",")]
        assert len(values) in lbw.lbw_lengths(arch) and parsed.base == values[0]
        named = dict(zip(lbw.LBW_BLOCK_IDS[arch.name][len(values)], values))
        assert all(parsed.blocks[i] == named.get(arch.block_name(i), parsed.blocks[i]) for i in range(arch.num_blocks))


@given(ARCHS, st.lists(st.one_of(TEXT, st.tuples(st.sampled_from(["down", "mid", "up", "threshold", "down_lr_weight", "x"]), TEXT).map("=".join)), max_size=4))
def test_show_specs(arch, specs):
    show = pytest.importorskip("lr_weights.cli.show")
    try:
        base, flat = show.expand(arch, show.parse_specs(specs, arch))
    except NetworkArgError:
        return
    assert len(flat) == arch.num_blocks and all(math.isfinite(w) for w in flat)


@given(st.lists(TEXT, max_size=5))
def test_key_value_pairs_split_on_the_first_equals(pairs):
    util = pytest.importorskip("lr_weights.cli._util")
    try:
        parsed = util.parse_pairs(pairs, "--network_args")
    except NetworkArgError as error:
        assert any("=" not in p for p in pairs)
        _expect_named(error, ("--network_args",))
        return
    assert parsed == {p.split("=", 1)[0].strip(): p.split("=", 1)[1] for p in pairs}


@given(st.one_of(TEXT, st.tuples(st.integers(-(10**6), 10**6), st.integers(-(10**6), 10**6), st.sampled_from(["x", "X"])).map(lambda t: f"{t[0]}{t[2]}{t[1]}")))
def test_plot_size(text):
    util = pytest.importorskip("lr_weights.cli._util")
    try:
        width, height = util.parse_size(text)
    except NetworkArgError as error:
        _expect_named(error, ("--plot-size",), text)
        return
    assert 100 <= width <= 10000 and 100 <= height <= 10000


GUI_KEYS = st.sampled_from(
    ["LoRA_type", "network_dim", "network_alpha", "conv_dim", "conv_alpha", "unit", "down_lr_weight", "mid_lr_weight", "up_lr_weight",
     "block_lr_zero_threshold", "block_dims", "block_alphas", "conv_block_dims", "conv_dims", "conv_alphas", "rank_dropout", "module_dropout",
     "loraplus_lr_ratio", "learning_rate", "unet_lr", "text_encoder_lr", "max_train_steps", "epoch", "train_batch_size", "sdxl", "optimizer",
     "optimizer_args", "additional_parameters", "save_model_as", "max_grad_norm", "scale_weight_norms", "network_dropout", "seed"]
)
JSON_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(), TEXT, st.sampled_from(["Standard", "Kohya LoCon", "Kohya DyLoRA", "LoCon"]))


@given(st.one_of(st.dictionaries(GUI_KEYS, JSON_VALUE, max_size=8), st.lists(st.integers(), max_size=2), TEXT))
@example({"LoRA_type": "Standard", "max_train_steps": float("inf")})
@example({"LoRA_type": "Standard", "max_train_steps": "nan"})
@example({"LoRA_type": "Standard", "network_dim": float("nan")})
def test_gui_configs(config):
    gui_config = pytest.importorskip("lr_weights.cli.gui_config")
    try:
        gui_config.gui_to_sd_scripts(config, "fuzz.json")
    except ValueError:
        return


# ---- regressions found by fuzzing ---------------------------------------------------------------------


def test_a_number_given_as_a_number_means_what_its_text_means():
    # Was: down_lr_weight=0.5 (a float, from a direct caller) set only IN00 and padded the rest with 1.0,
    # while "0.5" set every block.
    by_number = parse_network_settings(SD, 4, 1, {"down_lr_weight": 0.5}).options.block_lr_weights
    by_text = parse_network_settings(SD, 4, 1, {"down_lr_weight": "0.5"}).options.block_lr_weights
    assert by_number == by_text and by_number[:12] == (0.5,) * 12


def test_a_bad_entry_in_a_list_names_the_whole_list():
    # Was: the error showed only the entry ('inf'), not the value the caller passed.
    with pytest.raises(NetworkArgError) as raised:
        parse_network_settings(SD, 4, 1, {"mid_lr_weight": [float("inf")]})
    assert raised.value.key == "mid_lr_weight" and "[inf]" in str(raised.value) and "entry 1" in str(raised.value)


def test_gui_numbers_that_are_not_finite_are_named():
    # Was: OverflowError from int(inf) for an integer GUI setting.
    gui_config = pytest.importorskip("lr_weights.cli.gui_config")
    for value in (float("inf"), "-inf", "nan"):
        with pytest.raises(NetworkArgError, match="max_train_steps"):
            gui_config.gui_to_sd_scripts({"LoRA_type": "Standard", "network_dim": 8, "max_train_steps": value}, "fuzz.json")


def test_conv_dim_needs_integer_syntax():
    # The campaign's one finding (an oracle gap, not a bug): an integral value in e-notation or with a
    # decimal point is not "a whole number"; int() syntax only, as upstream's int().
    for text in ("1e+300", "4.0", "4e0"):
        with pytest.raises(NetworkArgError, match="conv_dim"):
            parse_network_settings(SD, 4, 1, {"conv_dim": text})
    assert parse_network_settings(SD, 4, 1, {"conv_dim": " 4 "}).conv_dim == 4
