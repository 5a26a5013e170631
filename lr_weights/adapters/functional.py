"""Pure LoRA math on tensors: the weight change up @ down x scale for Linear, 1x1 and k x k convs."""

from __future__ import annotations

import torch


def delta_weight(down: torch.Tensor, up: torch.Tensor, scale: float) -> torch.Tensor:
    """ΔW with the base layer's weight shape, in float32.

    Linear: up (out, r) @ down (r, in). 1x1 conv: the same on squeezed kernels. k x k conv:
    the composition "down (k x k, in -> r) then up (1x1, r -> out)" is one k x k conv whose kernel is
    sum_r up[o, r] * down[r, i, :, :].
    """
    down = down.float()
    up = up.float()
    if down.dim() == 2:
        return (up @ down) * scale
    up_2d = up.reshape(up.shape[0], up.shape[1])
    if down.shape[2:] == (1, 1):
        return (up_2d @ down.reshape(down.shape[0], down.shape[1])).reshape(up.shape[0], down.shape[1], 1, 1) * scale
    return torch.einsum("or,rihw->oihw", up_2d, down) * scale


def max_norm_ratio(norm: torch.Tensor, max_norm: float) -> torch.Tensor:
    """The factor that brings ‖ΔW‖ down to max_norm (1 when it is already within).

    sd-scripts clamps the norm from below at max_norm / 2 before dividing; the clamp only matters
    when it is below max_norm, where the ratio is 1 either way.
    """
    clamped = norm.clamp(min=max_norm / 2)
    return torch.clamp(clamped, max=max_norm) / clamped
