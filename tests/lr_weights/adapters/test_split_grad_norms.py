"""The DiT adapter's grad-norm hook (train_network calls it on every step when the network has it)
on a conv module: SD3's x_embedder patch conv with emb_dims. It used to multiply the 4-D conv
factors as matrices and stop training on the first step; the e2e run against sd3_train_network.py
found it. The norms are of ΔW's gradient estimate with ΔW flattened to (out, in·k·k), as ΔW is."""

import torch
from torch import nn

from lr_weights.adapters.split import SplitLoRAModule

from tests.tolerances import fp_tolerance

DIM, ALPHA = 4, 1.0  # scale 1/4: a dropped scale moves the norms 4x


def _trained_conv_module():
    torch.manual_seed(0)
    base = nn.Conv2d(16, 64, kernel_size=2, stride=2).requires_grad_(False)  # SD3's x_embedder.proj, narrow
    module = SplitLoRAModule("lora_unet_x_embedder_proj", base, DIM, ALPHA)
    module.apply_to()
    with torch.no_grad():
        module.lora_up.weight.copy_(torch.randn(module.lora_up.weight.shape))
    module.train()
    base(torch.randn(2, 16, 8, 8)).square().mean().backward()
    return module


def test_conv_grad_norms_are_row_norms_of_the_flattened_estimate():
    module = _trained_conv_module()
    module.update_grad_norms()
    down, up = module.lora_down.weight, module.lora_up.weight
    assert down.dim() == 4 and down.grad is not None and up.grad is not None
    d, dg, u, ug = (t.detach().double().flatten(1) for t in (down, down.grad, up, up.grad))
    want = (module.scale * (u @ dg + ug @ d)).norm(dim=1, keepdim=True)
    # bfloat16 (CPU autocast, as upstream): operands rounded once, DIM-term sums, two products
    # added, then a 64-long sum of squares for the norm; bound on the abs chain's row norms.
    chain = (abs(module.scale) * (u.abs() @ dg.abs() + ug.abs() @ d.abs())).norm(dim=1, keepdim=True)
    tolerance = fp_tolerance(torch.bfloat16, DIM + 4 + d.shape[1], chain)
    got = module.grad_norms.double()
    assert got.shape == (64, 1)
    assert ((got - want).abs() <= tolerance).all()
    assert ((want / module.scale - want).abs() > tolerance).all()  # a dropped scale would show
