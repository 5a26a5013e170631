"""The FLUX adapter's Linear paths (plain and split_qkv) against upstream lora_flux's formula:
same numbers (float64 reference), fewer dispatched ops, no more saved activations."""

import pytest
import torch
from torch import nn

from lr_weights.flux_modules import FluxLoRAModule, qkv_split_dims
from lr_weights.perf import OpCounter, saved_activation_bytes

HIDDEN = 32
LAYERS = {
    # name: (lora name, in, out) with FLUX's shapes at hidden 32, mlp ratio 4
    "double_qkv": ("lora_unet_double_blocks_0_img_attn_qkv", HIDDEN, 3 * HIDDEN),
    "single_linear1": ("lora_unet_single_blocks_0_linear1", HIDDEN, 3 * HIDDEN + 4 * HIDDEN),
    "mlp": ("lora_unet_double_blocks_0_img_mlp_0", HIDDEN, 4 * HIDDEN),
}
SHAPE = (2, 24, HIDDEN)  # batch, tokens, features


def adapted(kind, split=True, dtype=torch.float32):
    name, n_in, n_out = LAYERS[kind]
    torch.manual_seed(0)
    base = nn.Linear(n_in, n_out).to(dtype).requires_grad_(False)
    parts = qkv_split_dims(name, base) if split else None
    module = FluxLoRAModule(name, base, 4, 2.0, multiplier=0.7, split_dims=parts).to(dtype)
    with torch.no_grad():
        for _, up in module.factor_pairs():
            up.copy_(torch.randn(up.shape))  # drawn in float32 whatever the dtype: same values
    return base, module


def upstream_formula(base_forward, module, multiplier=0.7):
    """lora_flux: org(x) + cat([up_j(down_j(x))]) * multiplier * scale (one part without split)."""
    if module.split_dims is None:
        return lambda x: base_forward(x) + module.lora_up(module.lora_down(x)) * multiplier * module.scale
    return lambda x: base_forward(x) + torch.cat([up(down(x)) for down, up in zip(module.lora_down, module.lora_up)], dim=-1) * multiplier * module.scale


def test_split_sizes_come_from_the_layer_shapes():
    assert qkv_split_dims("lora_unet_double_blocks_3_txt_attn_qkv", nn.Linear(3072, 9216)) == (3072,) * 3
    assert qkv_split_dims("lora_unet_single_blocks_3_linear1", nn.Linear(3072, 21504)) == (3072,) * 3 + (12288,)
    assert qkv_split_dims("lora_unet_single_blocks_3_linear1", nn.Linear(32, 224)) == (32, 32, 32, 128)
    assert qkv_split_dims("lora_unet_single_blocks_3_linear2", nn.Linear(160, 32)) is None


@pytest.mark.parametrize("kind", list(LAYERS))
def test_forward_and_gradients_equal_upstream_formula(kind):
    # float64 reference: our float32 result may differ by rounding of sums over `in` and `rank` terms
    base64, module64 = adapted(kind, dtype=torch.float64)
    base, module = adapted(kind)
    x64 = torch.randn(SHAPE, dtype=torch.float64, requires_grad=True)
    expected = upstream_formula(base64.forward, module64)(x64)
    expected.square().sum().backward()
    x = x64.detach().float().requires_grad_(True)
    module.apply_to()
    got = base(x)
    got.square().sum().backward()
    eps = torch.finfo(torch.float32).eps
    scale = expected.abs().max().item()
    assert (got.double() - expected).abs().max().item() <= 4 * (HIDDEN + 4) * eps * scale
    pairs64 = [(d.grad, u.grad) for d, u in ((d, u) for d, u in module64.factor_pairs())]
    for (down, up), (down64, up64) in zip(module.factor_pairs(), pairs64):
        for g, ref in ((down.grad, down64), (up.grad, up64)):
            assert (g.double() - ref).abs().max().item() <= 4 * SHAPE[0] * SHAPE[1] * HIDDEN * eps * ref.abs().max().item()
    assert (x.grad.double() - x64.grad).abs().max().item() <= 4 * 4 * HIDDEN * eps * x64.grad.abs().max().item()


def cost(forward, weights):
    x = torch.randn(SHAPE, requires_grad=True)
    with OpCounter() as counter:
        y = forward(x)
        y.backward(torch.ones_like(y))
    for w in weights:
        w.grad = None
    return counter.compute_ops, saved_activation_bytes(lambda: forward(x), exclude=weights)


# Per adapted layer, fwd + bwd, input requiring grad. Plain: the SD budget (7). Split into k parts:
# forward cat(downs) + mm + k addmm + cat = k + 3; backward k addmm (grad of h) + cat + mm (downs)
# + cat(downs) + mm (x) + k addmm (ups) = 2k + 4; plus the engine's add into the input gradient.
BUDGET = {"double_qkv": 3 * 3 + 8, "single_linear1": 3 * 4 + 8, "mlp": 7}


@pytest.mark.parametrize("kind", list(LAYERS))
def test_ops_and_saved_activations_within_budget(kind):
    base, module = adapted(kind, split=kind != "mlp")
    weights = list(base.parameters()) + list(module.parameters())
    bare_ops, bare_bytes = cost(base.forward, weights)
    upstream_ops, upstream_bytes = cost(upstream_formula(base.forward, module), weights)
    module.apply_to()
    our_ops, our_bytes = cost(base, weights)
    ours, upstream = our_ops - bare_ops, upstream_ops - bare_ops
    assert ours <= BUDGET[kind], (ours, upstream)
    assert ours < upstream, (ours, upstream)
    assert bare_bytes < our_bytes <= upstream_bytes


def test_split_module_in_training_with_dropouts_uses_upstreams_draw_order():
    base, module = adapted("single_linear1")
    module.rank_dropout, module.dropout = 0.25, 0.1
    module.apply_to()
    module.train()
    x = torch.randn(SHAPE)
    torch.manual_seed(7)
    got = base(x)
    # upstream's order: every down, dropout of each, one rank mask per part, then the ups
    torch.manual_seed(7)
    module.restore()
    hs = [torch.nn.functional.dropout(down(x), p=0.1) for down in module.lora_down]
    masks = [torch.rand((h.size(0), module.lora_dim)) > 0.25 for h in hs]
    hs = [h * m.unsqueeze(1) for h, m in zip(hs, masks)]
    expected = base(x) + torch.cat([up(h) for up, h in zip(module.lora_up, hs)], dim=-1) * 0.7 * module.scale / 0.75
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
