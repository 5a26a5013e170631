"""The measure from first principles on the tiny SD1, SDXL and FLUX models."""

import math

import pytest
import torch

from lr_weights.analysis.deltas import read_deltas
from lr_weights.analysis.measure import MeasureSettings, measure, schedule_points
from lr_weights.analysis.tiny_denoisers import tiny_denoiser
from lr_weights.models.tiny_flux import FluxConfig

from tests.tolerances import fp_tolerance
from .lora_files import edit_file, write_network_file

# FLUX with a few blocks of each kind keeps the test fast; the names and numbering are FLUX.1's.
SMALL_FLUX = FluxConfig(depth=3, depth_single=4)
# (model, a block in the middle of the network)
MODELS = [("sd1", "IN04"), ("sdxl", "IN05"), ("flux", "D01")]
FEW = MeasureSettings(samples=3, timesteps=3, seed=0, batch_size=2)


def denoiser_for(model):
    return tiny_denoiser(model, seed=0, config=SMALL_FLUX if model == "flux" else None)


def analyse(denoiser, *paths, settings=FEW):
    files = [read_deltas(p, denoiser.layers, denoiser.arch, denoiser.model) for p in paths]
    return measure(denoiser, files, settings)


@pytest.fixture(scope="module", params=[m for m, _ in MODELS])
def trained(request, tmp_path_factory):
    model = request.param
    denoiser = denoiser_for(model)
    args = {} if model == "flux" else {"conv_dim": "2"}
    path = write_network_file(tmp_path_factory.mktemp(model) / "trained.safetensors", denoiser, **args)
    return model, denoiser, path


def test_only_one_block_nonzero_takes_the_whole_share(trained, tmp_path):
    model, denoiser, path = trained
    block = dict(MODELS)[model]
    single = edit_file(path, tmp_path / "single.safetensors", denoiser.arch, keep=[block])
    effect = analyse(denoiser, single).files[0]
    shares = {b.block: b.share for b in effect.blocks}
    assert len(shares) > 3  # every block with modules is a row, the zeroed ones too
    # Other rows' ΔW is exactly 0, so W0 + 0 is W0 bit for bit and their ablations change nothing.
    assert shares[block] == 1.0
    assert all(share == 0.0 for name, share in shares.items() if name != block)
    row = next(b for b in effect.blocks if b.block == block)
    # W + ΔW − ΔW_b is W and W + ΔW_b is W + ΔW: ablation and alone are the same two forwards.
    assert row.ablation == row.alone == effect.total > 0


def test_a_zeroed_block_has_no_share_and_shares_sum_to_one(trained, tmp_path):
    model, denoiser, path = trained
    block = dict(MODELS)[model]
    zeroed = edit_file(path, tmp_path / "zeroed.safetensors", denoiser.arch, zero=[block])
    effect = analyse(denoiser, zeroed).files[0]
    shares = {b.block: b.share for b in effect.blocks}
    assert shares[block] == 0.0
    assert sum(v > 0 for v in shares.values()) >= 3
    # Σ (e_b / Σe) in float64: K divisions and K − 1 additions, each rounding once.
    assert math.fsum(shares.values()) == pytest.approx(1.0, abs=fp_tolerance(torch.float64, 2 * len(shares)))


def test_same_seed_same_numbers_other_seed_other_numbers(trained):
    _, denoiser, path = trained
    first = analyse(denoiser, path).files[0]
    again = analyse(denoiser, path).files[0]
    assert first == again
    other = analyse(denoiser, path, settings=MeasureSettings(samples=3, timesteps=3, seed=1, batch_size=2)).files[0]
    assert other.total != first.total


def test_weights_are_restored_bit_for_bit(trained):
    _, denoiser, path = trained
    before = {name: layer.weight.detach().clone() for name, layer in denoiser.layers.items()}
    analyse(denoiser, path)
    assert all(torch.equal(layer.weight, before[name]) for name, layer in denoiser.layers.items())


def test_rows_are_the_same_for_every_file_and_batches_change_nothing(trained, tmp_path):
    model, denoiser, path = trained
    other = edit_file(path, tmp_path / "half.safetensors", denoiser.arch, scale=0.5)
    together = analyse(denoiser, path, other)
    alone = analyse(denoiser, other).files[0]
    assert together.files[1] == alone  # the second file sees the same samples and base outputs
    twice = analyse(denoiser, other, other)
    assert twice.files[0] == twice.files[1] == alone  # the same file twice: two results, not one overwritten
    one_by_one = analyse(denoiser, path, settings=MeasureSettings(samples=3, timesteps=3, seed=0, batch_size=1)).files[0]
    first = together.files[0]
    # Batching changes only the kernels' blocking: float32 outputs, compared at their resolution.
    assert one_by_one.total == pytest.approx(first.total, rel=1e-4)


def test_schedule_points_are_interval_centres():
    assert schedule_points(4, flow=False) == [125.0, 375.0, 625.0, 875.0]
    assert schedule_points(2, flow=True) == [0.25, 0.75]


def test_total_effect_scales_with_the_square_of_the_lora(tmp_path):
    """f(W + sΔ) − f(W) = s·JΔ + O(s²), so total(s)/s² = A + B·s + O(s²) with A = E‖JΔ‖²/E‖f‖².
    A comes from forward-mode differentiation of the untouched model (no swapping, no sampling
    code of ours); the deviation of total(s)/s² from it must be first order: halving s halves it
    (ratio 1/2 + O(s)). In float64 rounding is ~1e-16/s² relative, far below the deviations."""
    from tests.tolerances import float64

    with float64():
        denoiser = tiny_denoiser("sd1", seed=0)
    path = write_network_file(tmp_path / "base.safetensors", denoiser, std=0.2, dtype=torch.float64)
    settings = MeasureSettings(samples=2, timesteps=2, seed=0, batch_size=2, resolution=64)
    deltas = read_deltas(path, denoiser.layers, denoiser.arch, denoiser.model)
    reference = first_order_effect(denoiser, deltas, settings)
    deviations = []
    for s in (0.02, 0.01):
        scaled = edit_file(path, tmp_path / f"s{s}.safetensors", denoiser.arch, scale=s)
        total = analyse(denoiser, scaled, settings=settings).files[0].total
        deviations.append(abs(total / s**2 / reference - 1))
    assert deviations[0] < 0.05  # first order already close (measured: 0.2%)
    # The ratio is (B/2 + C·s/4) / (B + C·s) = 1/2 − C·s/(4B) + O(s²); with |C/B| of the order of the
    # deviation's own coefficient (deviation / s ≈ 0.1 here) that is ~1e-3, well inside 0.05, while a
    # quantity not quadratic in s (linear: ratio 2x off; cubic) misses it by far.
    assert deviations[1] / deviations[0] == pytest.approx(0.5, abs=0.05)


def first_order_effect(denoiser, deltas, settings):
    """E‖JΔ‖² / E‖f(W)‖² by torch.func.jvp over the model's weights, on the same samples."""
    from torch.func import functional_call, jvp

    from lr_weights.analysis.measure import draw_samples

    samples = draw_samples(denoiser, settings, settings.resolution)
    cond = denoiser.encode([""])
    net = denoiser.net
    names = {id(layer): name for name, layer in net.named_modules()}
    params = {}
    tangents = {}
    for module in deltas.modules:
        if not module.is_unet:
            continue
        layer = denoiser.layers[module.name]
        key = names[id(layer)] + ".weight"
        params[key] = layer.weight.detach()
        tangents[key] = module.weight(layer.weight.device).to(layer.weight.dtype)
    context = cond["context"][samples.prompt_index]

    def f(weights):
        return functional_call(net, weights, (samples.latents, samples.timesteps, context))

    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):  # the composed attention, which forward AD goes through
        base, derivative = jvp(f, (params,), (tangents,))
    power = base.pow(2).flatten(1).sum(1).mean()
    return float((derivative.pow(2).flatten(1).sum(1).mean() / power).detach())
