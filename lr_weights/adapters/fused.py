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


class _SplitLoRALinear(torch.autograd.Function):
    """split_qkv's k LoRAs of one fused Linear (one per output part) as one node.

    The k downs act as one (k·r, in) matrix, so x is read once (one mm instead of k); each part's
    up adds into its columns of `out` inside an addmm. Backward mirrors _LoRALinear per part.
    """

    @staticmethod
    def forward(ctx, out: torch.Tensor, x: torch.Tensor, scale: float, sizes: Tuple[int, ...], *factors: torch.Tensor) -> torch.Tensor:
        parts = len(sizes)
        downs, ups = factors[:parts], factors[parts:]
        dtype = out.dtype
        rank = downs[0].shape[0]
        x2d = x.reshape(-1, x.shape[-1]).to(dtype)
        down = torch.cat([d.to(dtype) for d in downs], dim=0)
        h = torch.mm(x2d, down.t())
        out2d = out.reshape(-1, out.shape[-1])
        columns, start = [], 0
        for j, size in enumerate(sizes):
            columns.append(torch.addmm(out2d[:, start : start + size], h[:, j * rank : (j + 1) * rank], ups[j].to(dtype).t(), alpha=scale))
            start += size
        y = torch.cat(columns, dim=1)
        ctx.scale, ctx.sizes, ctx.rank = scale, sizes, rank
        ctx.x_shape, ctx.x_dtype, ctx.dtype = x.shape, x.dtype, dtype
        ctx.factor_dtypes = [f.dtype for f in factors]
        downs_train = any(ctx.needs_input_grad[4 : 4 + parts])
        # The downs are saved as themselves (weights), not as their concatenation, which would be a
        # (k·r, in) activation more than upstream keeps; backward concatenates them again.
        ctx.save_for_backward(x2d if downs_train else None, h, *downs, *ups)
        return y.view(out.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        parts, rank, scale = len(ctx.sizes), ctx.rank, ctx.scale
        x2d, h, *factors = ctx.saved_tensors
        downs, ups = factors[:parts], factors[parts:]
        need = ctx.needs_input_grad
        need_x, need_downs, need_ups = need[1], any(need[4 : 4 + parts]), need[4 + parts :]
        g = grad.reshape(-1, grad.shape[-1]).to(ctx.dtype)
        slices, start = [], 0
        for size in ctx.sizes:
            slices.append(slice(start, start + size))
            start += size
        grad_x = None
        grad_downs = [None] * parts
        grad_ups = [None] * parts
        if need_x or need_downs:
            grad_h = torch.cat(
                [torch.addmm(h[:, j * rank : (j + 1) * rank], g[:, slices[j]], ups[j].to(ctx.dtype), beta=0, alpha=scale) for j in range(parts)], dim=1
            )
            if need_downs:
                grad_down = grad_h.t().mm(x2d)
                grad_downs = [chunk.to(ctx.factor_dtypes[j]) for j, chunk in enumerate(grad_down.split(rank, dim=0))]
            if need_x:
                down = torch.cat([d.to(ctx.dtype) for d in downs], dim=0)
                grad_x = grad_h.mm(down).view(ctx.x_shape).to(ctx.x_dtype)
        for j in range(parts):
            if need_ups[j]:
                up = ups[j].to(ctx.dtype)
                grad_ups[j] = torch.addmm(up, g[:, slices[j]].t(), h[:, j * rank : (j + 1) * rank], beta=0, alpha=scale).to(ctx.factor_dtypes[parts + j])
        return (grad if need[0] else None, grad_x, None, None, *grad_downs, *grad_ups)


def split_lora_linear(out: torch.Tensor, x: torch.Tensor, downs, ups, sizes: Tuple[int, ...], scale: float) -> torch.Tensor:
    """`out + scale · [(x @ down_jᵀ) @ up_jᵀ]_j` (parts concatenated along the output features)."""
    return _SplitLoRALinear.apply(out, x, float(scale), tuple(sizes), *downs, *ups)
