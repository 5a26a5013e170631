"""Several configurations per forward (batch_blocks=True) give what one configuration per forward gives.

The two paths compute the same f(W0 + Σ ΔW_on) two ways: merged into the weights (W0 + ΔW)·x, or
added beside the layer W0·x + ΔW·x per batch row. Both run in float64 here, with LoRA factors on a
2⁻¹⁰ grid so that ΔW = up·down·scale is exact in float32 too (the merged path builds ΔW in float32);
what is left is float64 rounding, compared at float32's resolution (tests.tolerances.float64_agreement).
"""

import dataclasses
import math

import pytest
import torch

from lr_weights.analysis.deltas import LoraDeltas, read_deltas
from lr_weights.analysis.measure import MeasureSettings, measure, parse_settings
from lr_weights.analysis.tiny_denoisers import tiny_denoiser

from tests.tolerances import float64, float64_agreement
from .lora_files import edit_file, only_rows, write_network_file

ROWS = ["TE", "IN01", "IN04", "M00", "OUT05", "OUT11"]


@pytest.fixture(scope="module")
def sd1_float64(tmp_path_factory):
    with float64():
        denoiser = tiny_denoiser("sd1", seed=0)
    folder = tmp_path_factory.mktemp("batched")
    trained = write_network_file(folder / "trained.safetensors", denoiser, std=0.2, dtype=torch.float64, conv_dim="2", conv_alpha="1")
    path = only_rows(trained, folder / "rows.safetensors", denoiser.arch, ROWS, grid_bits=10)
    return denoiser, read_deltas(path, denoiser.layers, denoiser.arch, denoiser.model)


def as_dense(deltas: LoraDeltas) -> LoraDeltas:
    """The same ΔW as dense matrices (the form LyCORIS files take), for the dense code path."""
    modules = tuple(dataclasses.replace(m, down=None, up=None, scale=1.0, dense=m.weight(torch.device("cpu"))) for m in deltas.modules)
    return dataclasses.replace(deltas, modules=modules)


def numbers(effect):
    values = {"total": effect.total}
    for block in effect.blocks:
        values.update({f"{block.block} ablation": block.ablation, f"{block.block} alone": block.alone, f"{block.block} share": block.share})
    return values


@pytest.mark.parametrize("form", ["factors", "dense"])
@pytest.mark.parametrize("prompts", [(), ("a cat", "")], ids=["empty prompt", "text encoders"])
def test_configurations_batched_equal_one_per_forward(sd1_float64, form, prompts):
    denoiser, deltas = sd1_float64
    deltas = as_dense(deltas) if form == "dense" else deltas
    # 5 rows per forward: configurations split across forwards and share them with their neighbours.
    settings = MeasureSettings(samples=3, timesteps=3, seed=0, batch_size=5, resolution=64, prompts=prompts, batch_blocks=True)
    batched = measure(denoiser, [deltas], settings)
    merged = measure(denoiser, [deltas], dataclasses.replace(settings, batch_blocks=False))
    assert batched.rows_per_forward == 5 and merged.rows_per_forward == 3
    assert batched.base_power == pytest.approx(merged.base_power, abs=float64_agreement(merged.base_power))
    got, want = numbers(batched.files[0]), numbers(merged.files[0])
    assert got.keys() == want.keys() and ("TE share" in got) == bool(prompts)
    for key, value in want.items():
        assert abs(got[key] - value) <= float64_agreement(abs(value)), key
    # The comparison can fail: blocks differ from each other far beyond the tolerance.
    shares = [v for k, v in want.items() if k.endswith("share")]
    assert min(shares) > 1e-4 and max(shares) - min(shares) > 0.05


def test_flux_batched_equal_one_per_forward(tmp_path):
    """The same on FLUX: Linear layers only, modulations on [batch, width], the CLIP encoder's row."""
    from lr_weights.models.tiny_flux import FluxConfig

    with float64():
        denoiser = tiny_denoiser("flux", seed=0, config=FluxConfig(depth=2, depth_single=2))
    trained = write_network_file(tmp_path / "trained.safetensors", denoiser, std=0.2, dtype=torch.float64)
    path = only_rows(trained, tmp_path / "grid.safetensors", denoiser.arch, None, grid_bits=10)
    deltas = read_deltas(path, denoiser.layers, denoiser.arch, denoiser.model)
    settings = MeasureSettings(samples=3, timesteps=3, seed=0, batch_size=4, prompts=("a cat",), batch_blocks=True)
    got = numbers(measure(denoiser, [deltas], settings).files[0])
    want = numbers(measure(denoiser, [deltas], dataclasses.replace(settings, batch_blocks=False)).files[0])
    assert got.keys() == want.keys() and {"TE1 share", "D00 share", "S01 share"} <= set(got)  # T5 untrained: FLUX's default
    for key, value in want.items():
        assert abs(got[key] - value) <= float64_agreement(abs(value)), key
    shares = [v for k, v in want.items() if k.endswith("share")]
    assert min(shares) > 1e-4 and max(shares) - min(shares) > 0.05


def counting(denoiser):
    """The denoiser with its forwards recorded (batch rows of each)."""
    calls = []

    def predict(x, t, cond):
        calls.append(x.shape[0])
        return denoiser.predict(x, t, cond)

    return dataclasses.replace(denoiser, predict=predict), calls


@pytest.mark.parametrize("most", [4, 5, 64])
def test_forwards_counted(tmp_path, most):
    """N rows, S samples, at most B rows per forward: the base and 1 + 2N configurations hold
    (2N + 2)·S batch rows, so ⌈(2N + 2)·S / B⌉ forwards, every one of the same size; one
    configuration per forward takes ⌈S / B⌉ forwards for each of the 2N + 2."""
    denoiser = tiny_denoiser("sd1", seed=0)
    rows = ["IN04", "M00", "OUT11"]
    trained = write_network_file(tmp_path / "trained.safetensors", denoiser)
    deltas = read_deltas(only_rows(trained, tmp_path / "three.safetensors", denoiser.arch, rows), denoiser.layers, denoiser.arch, denoiser.model)
    samples, n = 3, len(rows)
    settings = MeasureSettings(samples=samples, timesteps=2, seed=0, batch_size=most, resolution=64, batch_blocks=True)

    counted, calls = counting(denoiser)
    measure(counted, [deltas], settings)
    assert len(calls) == math.ceil((2 * n + 2) * samples / most)
    assert len(set(calls)) == 1 and calls[0] <= most

    counted, calls = counting(denoiser)
    measure(counted, [deltas], dataclasses.replace(settings, batch_blocks=False))
    assert len(calls) == (2 * n + 2) * math.ceil(samples / most)


def test_first_principles_hold_batched(tmp_path):
    """test_measure's exact checks on the batched path: a block whose ΔW is 0 adds exactly 0 to its
    rows (x·0·mask), so with one non-zero block its share is exactly 1, the others' exactly 0, and
    ablation, alone and total are the same two outputs; a zeroed block's share is exactly 0."""
    denoiser = tiny_denoiser("sd1", seed=0)
    trained = write_network_file(tmp_path / "trained.safetensors", denoiser, conv_dim="2")
    settings = MeasureSettings(samples=3, timesteps=3, seed=0, batch_size=5, resolution=64, batch_blocks=True)
    single = edit_file(trained, tmp_path / "single.safetensors", denoiser.arch, keep=["IN04"])
    effect = measure(denoiser, [read_deltas(single, denoiser.layers, denoiser.arch, denoiser.model)], settings).files[0]
    shares = {b.block: b.share for b in effect.blocks}
    assert len(shares) > 3 and shares["IN04"] == 1.0 and all(v == 0.0 for k, v in shares.items() if k != "IN04")
    row = next(b for b in effect.blocks if b.block == "IN04")
    assert row.ablation == row.alone == effect.total > 0
    zeroed = edit_file(trained, tmp_path / "zeroed.safetensors", denoiser.arch, zero=["OUT11"])
    effect = measure(denoiser, [read_deltas(zeroed, denoiser.layers, denoiser.arch, denoiser.model)], settings).files[0]
    shares = {b.block: b.share for b in effect.blocks}
    assert shares["OUT11"] == 0.0 and sum(v > 0 for v in shares.values()) >= 3


def test_out_of_memory_names_the_flag(sd1_float64):
    denoiser, deltas = sd1_float64

    def oom(*args):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    settings = MeasureSettings(samples=2, timesteps=2, batch_size=3, resolution=64, batch_blocks=True)
    with pytest.raises(ValueError, match="with 3 rows per forward: lower --batch-size"):
        measure(dataclasses.replace(denoiser, predict=oom), [deltas], settings)


def test_batch_size_is_a_number_or_auto():
    assert parse_settings(batch_size="auto").batch_size is None and parse_settings(batch_size="8").batch_size == 8
    with pytest.raises(ValueError, match="--batch-size.*or auto"):
        parse_settings(batch_size="0")
