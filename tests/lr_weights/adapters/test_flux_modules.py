"""The FLUX adapter's Linear paths (plain and split_qkv) against upstream lora_flux's formula:
same numbers (float64 reference), fewer dispatched ops, no more saved activations."""

import pytest
import torch
from torch import nn

from lr_weights.flux import FluxLoRAModule, qkv_split_dims
from lr_weights.adapters.perf import OpCounter, saved_activation_bytes

from tests.tolerances import abs_linear, assert_within, fp_tolerance, reduction_length

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


def abs_formula(base, module, x, grad_out, multiplier=0.7):
    """The upstream formula evaluated on absolute values in float64, then backward with |G|: per
    output (and per gradient entry) the Σ|xᵢ·yᵢ| of tests/tolerances.py's rounding bound."""
    ax = x.detach().double().abs().requires_grad_()
    pairs = [(d.detach().double().abs().requires_grad_(), u.detach().double().abs().requires_grad_()) for d, u in module.factor_pairs()]
    branch = torch.cat([(ax @ d.T) @ u.T for d, u in pairs], dim=-1) * abs(multiplier * module.scale)
    ay = nn.functional.linear(ax, base.weight.double().abs(), base.bias.double().abs()) + branch
    ay.backward(grad_out.double().abs())
    return ay.detach(), ax.grad, [(d.grad, u.grad) for d, u in pairs]


@pytest.mark.parametrize("kind", list(LAYERS))
def test_forward_and_gradients_equal_upstream_formula(kind):
    """float64 reference of upstream's formula on the same float32 inputs; our float32 forward and
    backward (fixed output gradient G, so each gradient is a chain of sums of products) may differ
    from it by rounding only: tests/tolerances.py's bound with the chain on absolute values and n
    every reduction on the way (rows, in, out, every part's rank) plus the multiplies and adds."""
    base64, module64 = adapted(kind, dtype=torch.float64)
    base, module = adapted(kind)
    x = torch.randn(SHAPE, requires_grad=True)
    x64 = x.detach().double().requires_grad_(True)
    grad_out = torch.randn(SHAPE[:-1] + (base.out_features,))
    expected = upstream_formula(base64.forward, module64)(x64)
    expected.backward(grad_out.double())
    module.apply_to()
    got = base(x)
    got.backward(grad_out)
    magnitude, x_magnitude, pair_magnitudes = abs_formula(base, module, x, grad_out)
    parts = len(module.factor_pairs())
    # forward: the down reduction, the rank reduction, 0.7·scale rounded, two multiplies, one add
    forward_tolerance = fp_tolerance(torch.float32, base.in_features + module.lora_dim + 4, magnitude)
    assert_within(got, expected, forward_tolerance, f"{kind} forward")
    rows = SHAPE[0] * SHAPE[1]
    n = rows + base.in_features + base.out_features + parts * module.lora_dim + 4
    pairs64 = [(d.grad, u.grad) for d, u in module64.factor_pairs()]
    for j, ((down, up), (down64, up64), (down_mag, up_mag)) in enumerate(zip(module.factor_pairs(), pairs64, pair_magnitudes)):
        assert_within(down.grad, down64, fp_tolerance(torch.float32, n, down_mag), f"{kind} grad down {j}")
        assert_within(up.grad, up64, fp_tolerance(torch.float32, n, up_mag), f"{kind} grad up {j}")
    assert_within(x.grad, x64.grad, fp_tolerance(torch.float32, n, x_magnitude), f"{kind} grad x")
    # The checks can fail: a 1 % error is far outside each bound.
    assert not (got.double() * 1.01 - expected).abs().le(forward_tolerance).all()
    assert not (x.grad.double() * 1.01 - x64.grad).abs().le(fp_tolerance(torch.float32, n, x_magnitude)).all()


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
    # Same masks, so the same sums of products up to rounding (tests/tolerances.py): the chain on
    # absolute values with the largest factor the dropouts apply (1/0.9 on h, 1/0.75 on ranks), and
    # n = the down and rank reductions + 8 roundings: 1/0.9 and the scalar products, each side's
    # scalar multiplies (0.7, scale, /0.75 or their product) and the final add.
    boost = 1 / (0.9 * 0.75)
    magnitude = abs_linear(base, x) + torch.cat([abs_linear(up, abs_linear(down, x)) for down, up in zip(module.lora_down, module.lora_up)], dim=-1) * 0.7 * module.scale * boost
    tolerance = fp_tolerance(torch.float32, reduction_length(module.lora_down[0]) + module.lora_dim + 8, magnitude)
    assert_within(got, expected, tolerance, "split module with dropouts")
    assert not (got * 1.01 - expected).abs().le(tolerance).all()  # a 1 % error is far outside
