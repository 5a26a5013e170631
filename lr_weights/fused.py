"""The LoRA branch of a Linear as one autograd node: out + scale · (x @ downᵀ) @ upᵀ.

Written with plain autograd ops the branch costs 10 dispatched compute ops per module for forward
and backward (sd-scripts' `up(down(x)) * multiplier * scale` costs 12), and every op is a kernel
launch and, for the full-width ones, a pass over memory. Here the scale rides on the matrix
products (`addmm(..., alpha=scale)` forward and backward), the output is added by the same addmm
that computes it, and backward skips what is not needed:

    forward:  h = x @ downᵀ                          (mm)
              y = out + scale · h @ upᵀ              (addmm, the add is free)
    backward: g_h  = scale · g @ up                  (addmm with beta=0)
              g_up = scale · gᵀ @ h                  (addmm with beta=0)   if up trains
              g_dn = g_hᵀ @ x                        (mm)                  if down trains
              g_x  = g_h @ down                      (mm)                  if x needs a gradient

That is 7 ops with the engine's add of g_x into the base layer's input gradient (6 with a
frozen `down`, as in LoRA-FA). Saved for backward: x (only when `down` trains) and h, which is
what autograd saves for the unfused form too — with LoRA-FA only the rank-r h is kept.

Under autocast the branch computes in the dtype of the base layer's output (the autocast dtype),
so activations are never up-cast; gradients of the weights are returned in their own dtype.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch


class _LoRALinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, out: torch.Tensor, x: torch.Tensor, down: torch.Tensor, up: torch.Tensor, scale: float) -> torch.Tensor:
        dtype = out.dtype
        x2d = x.reshape(-1, x.shape[-1]).to(dtype)
        h = torch.mm(x2d, down.to(dtype).t())
        y = torch.addmm(out.reshape(-1, out.shape[-1]), h, up.to(dtype).t(), alpha=scale)
        ctx.scale = scale
        ctx.x_shape = x.shape
        ctx.x_dtype = x.dtype
        ctx.dtype = dtype
        # x is kept only for down's gradient: with a frozen down (LoRA-FA) only rank-r h is saved.
        ctx.save_for_backward(x2d if ctx.needs_input_grad[2] else None, h, down, up)
        return y.view(out.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        x2d, h, down, up = ctx.saved_tensors
        need_out, need_x, need_down, need_up, _ = ctx.needs_input_grad
        g = grad.reshape(-1, grad.shape[-1]).to(ctx.dtype)
        up_c = up.to(ctx.dtype)
        grad_out = grad_x = grad_down = grad_up = None
        # beta=0: the first argument only gives the shape; its values are never read.
        if need_x or need_down:
            grad_h = torch.addmm(h, g, up_c, beta=0, alpha=ctx.scale)
            if need_down:
                grad_down = grad_h.t().mm(x2d).to(down.dtype)
            if need_x:
                grad_x = grad_h.mm(down.to(ctx.dtype)).view(ctx.x_shape).to(ctx.x_dtype)
        if need_up:
            grad_up = torch.addmm(up_c, g.t(), h, beta=0, alpha=ctx.scale).to(up.dtype)
        if need_out:
            grad_out = grad
        return grad_out, grad_x, grad_down, grad_up, None


def lora_linear(out: torch.Tensor, x: torch.Tensor, down: torch.Tensor, up: torch.Tensor, scale: float) -> torch.Tensor:
    """`out + scale · (x @ downᵀ) @ upᵀ` for x of shape (..., in) and out of shape (..., out_features)."""
    return _LoRALinear.apply(out, x, down, up, float(scale))
