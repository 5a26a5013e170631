"""Numeric tolerances for the tests, derived from first principles and never tuned to one machine.

Two kinds of comparison, one helper each:

* Same sum of products evaluated two ways (our fused kernel against upstream's formula, another
  operand order, another SIMD width chosen by ATEN_CPU_CAPABILITY): `fp_tolerance` is the classic
  worst-case rounding bound (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
  §3.1 and §3.5). A sum of n products computed in ANY order, with or without FMA, is within
  γ_n·Σ|xᵢ·yᵢ| of the exact value, γ_n = n·u/(1 − n·u), u = eps/2 the unit roundoff. A chain of
  such sums (a product of matrices, a layer then another) obeys the same bound with n the sum of
  the chain's reduction lengths and Σ|x·y| replaced by the chain evaluated on absolute values
  (`abs_linear` computes it for Linear/Conv2d). Both evaluations lie within the bound of the exact
  value, so they lie within twice the bound of each other. Nothing in it depends on the CPU.

* Whole models with non-linear layers (attention, norms, GELU) or optimizer trajectories (Adam
  divides by √v + eps, so a near-zero gradient component amplifies its rounding without bound):
  no usable closed-form bound exists in float32. There both sides run in float64 (`float64`), so
  each operation rounds at u₆₄ = 2⁻⁵³, and `float64_agreement` asks them to agree to float32's
  resolution at the result's scale, eps₃₂·scale. That leaves room for eps₃₂/u₆₄ = 2³⁰ ≈ 10⁹ times
  the unit roundoff — far more than any rounding amplification in these tiny models — while a
  formula difference (a wrong scale, a missing multiplier, a misplaced key) changes the result by
  a fraction of its own size, orders of magnitude above eps₃₂·scale. Tests that use it also check
  that the effect under test is far above the tolerance, so the comparison can fail.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Union

import torch
from torch import nn

Scale = Union[float, torch.Tensor]


def eps(dtype: torch.dtype) -> float:
    """Machine epsilon of `dtype`: the gap between 1 and the next representable number (2u)."""
    return torch.finfo(dtype).eps


def fp_tolerance(dtype: torch.dtype, reduction_size: int, scale: Scale = 1.0) -> Scale:
    """Largest difference two evaluations in `dtype` of the same chain of sums can show.

    `reduction_size` is n, the number of roundings along the longest path from inputs to a result
    (the reduction lengths of the chained sums plus one per elementwise multiply or add); `scale` is
    the chain evaluated on absolute values, Σ|xᵢ·yᵢ| (a float, or a tensor for elementwise bounds).
    Each evaluation is within γ_n·scale of the exact result, so the two differ by at most
    2·γ_n·scale ≈ n·eps·scale. Also a relative bound when `scale` is 1 and the quantity is positive.
    """
    u = eps(dtype) / 2
    if reduction_size * u >= 1:
        raise ValueError(f"reduction_size={reduction_size} is too long for a rounding bound in {dtype}")
    gamma = reduction_size * u / (1 - reduction_size * u)
    return 2 * gamma * scale


def float64_agreement(scale: Scale) -> Scale:
    """Tolerance for two float64 evaluations of what should be the same math: float32's eps at `scale`.

    See the module docstring: float64 rounding, even amplified 10⁸ times, stays below it; a formula
    difference of relative size above ~10⁻⁶ of `scale` exceeds it.
    """
    return eps(torch.float32) * scale


@contextlib.contextmanager
def float64() -> Iterator[None]:
    """Build tensors and modules in float64 inside the block (torch's default dtype), restoring it after."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def abs_linear(layer: nn.Module, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
    """Σ|w|·|x| (+ |b|) per output of a Linear or Conv2d, in float64: the `scale` for that layer."""
    weight = layer.weight.detach().double().abs()
    b = layer.bias.detach().double().abs() if bias and getattr(layer, "bias", None) is not None else None
    x = x.detach().double().abs()
    if isinstance(layer, nn.Conv2d):
        return nn.functional.conv2d(x, weight, b, layer.stride, layer.padding, layer.dilation, layer.groups)
    return nn.functional.linear(x, weight, b)


def reduction_length(layer: nn.Module) -> int:
    """Products summed per output of a Linear or Conv2d: in_features, or in_channels·kh·kw/groups."""
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        return layer.in_channels // layer.groups * kh * kw
    return layer.in_features


def worst_ratio(got: torch.Tensor, want: torch.Tensor, tolerance: Scale) -> float:
    """max |got − want| / tolerance (elementwise when the tolerance is a tensor); ≤ 1 passes."""
    diff = (got.detach().double() - want.detach().double()).abs()
    if isinstance(tolerance, torch.Tensor):
        tolerance = tolerance.detach().double()
        return float((diff / tolerance.clamp_min(torch.finfo(torch.float64).tiny)).max())
    return float(diff.max()) / tolerance


def assert_within(got: torch.Tensor, want: torch.Tensor, tolerance: Scale, what: str = "") -> None:
    """|got − want| ≤ tolerance everywhere, with the worst ratio in the message."""
    assert got.shape == want.shape, (what, got.shape, want.shape)
    ratio = worst_ratio(got, want, tolerance)
    assert ratio <= 1.0, f"{what}: worst |difference| / tolerance = {ratio:.3g}"


def on_grid(tensor: torch.Tensor, step_bits: int) -> None:
    """Round to multiples of 2^-step_bits in place. Values on coarse grids make a float32 step exact
    (a product of a·2^-p and b·2^-q is a multiple of 2^-(p+q); a sum of such multiples is exact while
    it needs ≤ 24 significant bits), so a float32 merge and a float64 forward can be compared."""
    with torch.no_grad():
        tensor.copy_(torch.round(tensor * 2.0**step_bits) / 2.0**step_bits)


# ---- LoRA-specific: the ΔW norm after apply_max_norm_regularization ------------------------

def factor_pairs(module):
    """[(down, up)] 2-D float64 weights of a LoRA module; one pair per part for FLUX's split_qkv
    (ΔW is then the parts' rows one after another)."""
    pairs = module.factor_pairs() if hasattr(module, "factor_pairs") else [(module.lora_down.weight, module.lora_up.weight)]
    return [(down.detach().double().flatten(1), up.detach().double().flatten(1)) for down, up in pairs]


def delta_norm64(module):
    """‖ΔW‖ of the module's stored weights, computed in float64 (so its own rounding is negligible)."""
    return float(torch.cat([up @ down for down, up in factor_pairs(module)]).norm()) * module.scale


def max_norm_rtol(modules, weight_dtype):
    """Relative bound on |‖ΔW after‖ − max_norm| / max_norm for apply_max_norm_regularization.

    It computes ΔW (rank-r sums) and its norm (N squares summed, a square root) in float32, so its
    norm carries at most 2γ_{N+r+6}·κ relative error, κ = ‖|up|·|down|‖ / ‖up·down‖ (an element's
    rounding is relative to |up|·|down|, not to ΔW); then it multiplies up and down by √ratio in the
    weights' dtype: at most two roundings each, 2·eps(dtype)·κ on ΔW. Evaluated here, before the call."""
    worst = 0.0
    for m in modules:
        pairs = factor_pairs(m)
        delta = torch.cat([up @ down for down, up in pairs])
        if not delta.any():
            continue  # ΔW = 0: nothing to scale, the norm is exactly 0
        kappa = float(torch.cat([up.abs() @ down.abs() for down, up in pairs]).norm() / delta.norm())
        n = delta.numel() + m.lora_dim + 6
        worst = max(worst, kappa * (fp_tolerance(torch.float32, n) + 2 * torch.finfo(weight_dtype).eps))
    return worst

