"""The adapter forward against the formula sd-scripts trains with, random draws included.

The reference is upstream's math written out: base(x) + up(mask ⊙ dropout(down(x))) ·
multiplier · scale / (1 − p_rank), with the module-dropout draw first, then neuron dropout, then
the rank mask, so that the same seed makes the same draws.
"""

import math

import pytest
import torch
from torch import nn

from lr_weights.adapters.lora import LoRAModule, max_rank

from tests.tolerances import abs_linear, assert_within, fp_tolerance, reduction_length


def reference(module, base, x, multiplier, module_p, neuron_p, rank_p):
    out = base(x)
    if module_p is not None and torch.rand(1) < module_p:
        return out
    h = module.lora_down(x)
    if neuron_p is not None:
        h = nn.functional.dropout(h, p=neuron_p)
    scale = module.scale
    if rank_p is not None:
        mask = torch.rand((h.size(0), module.lora_dim)) > rank_p
        mask = mask.unsqueeze(1) if h.dim() == 3 else mask[..., None, None] if h.dim() == 4 else mask
        h = h * mask
        scale = scale * (1.0 / (1.0 - rank_p))
    return out + module.lora_up(h) * multiplier * scale


CASES = [
    (nn.Linear(16, 24), (3, 16)),
    (nn.Linear(16, 24), (3, 5, 16)),
    (nn.Conv2d(8, 12, 1), (2, 8, 6, 6)),
    (nn.Conv2d(8, 12, 3, stride=2, padding=1), (2, 8, 6, 6)),
]


@pytest.mark.parametrize("base, shape", CASES, ids=["linear2d", "linear3d", "conv1x1", "conv3x3"])
@pytest.mark.parametrize("dropouts", [(None, None, None), (0.3, 0.2, 0.25)], ids=["plain", "dropouts"])
def test_forward_matches_upstream_formula(base, shape, dropouts):
    module_p, neuron_p, rank_p = dropouts
    torch.manual_seed(0)
    module = LoRAModule("lora_unet_x", base, dim=4, alpha=2.0, multiplier=0.7, dropout=neuron_p, rank_dropout=rank_p, module_dropout=module_p)
    with torch.no_grad():
        module.lora_up.weight.normal_()
    original_forward = base.forward
    module.apply_to()
    module.train()
    x = torch.randn(shape)
    # Rounding bound (tests/tolerances.py): the branch on absolute values, times the largest factor
    # the dropouts can apply (1/(1-p) each, or 0), and n = down and rank reductions + 4 multiplies/adds.
    boost = 1.0 / ((1.0 - (neuron_p or 0.0)) * (1.0 - (rank_p or 0.0)))
    magnitude = abs_linear(base, x) + abs_linear(module.lora_up, abs_linear(module.lora_down, x)) * 0.7 * module.scale * boost
    tolerance = fp_tolerance(torch.float32, reduction_length(module.lora_down) + module.lora_dim + 4, magnitude)
    for seed in range(6):  # several seeds, so module dropout both fires and does not
        torch.manual_seed(seed)
        expected = reference(module, original_forward, x, 0.7, module_p, neuron_p, rank_p)
        torch.manual_seed(seed)
        assert_within(base(x), expected, tolerance, f"seed {seed}")
    # The check can fail: upstream's formula with a 1 % larger multiplier is outside the bound.
    torch.manual_seed(0)
    wrong = reference(module, original_forward, x, 0.7 * 1.01, None, None, None)
    module.eval()
    assert not (base(x) - wrong).abs().le(tolerance).all()


def test_same_seed_same_init_as_upstream_constructor_calls():
    """Upstream builds lora_down then lora_up with nn defaults, then re-inits down (kaiming, a=√5)
    and zeros up: the RNG stream after creation must be where upstream leaves it."""
    base = nn.Linear(32, 48)
    torch.manual_seed(7)
    module = LoRAModule("lora_te_x", base, dim=8, alpha=None)
    after_ours = torch.rand(1)

    torch.manual_seed(7)
    down = nn.Linear(32, 8, bias=False)
    nn.Linear(8, 48, bias=False)
    nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
    after_reference = torch.rand(1)
    assert torch.equal(module.lora_down.weight, down.weight)
    assert torch.equal(after_ours, after_reference)
    assert float(module.alpha) == 8.0 and module.scale == 1.0
    assert torch.count_nonzero(module.lora_up.weight) == 0


def test_max_rank():
    assert max_rank(nn.Linear(768, 320)) == 320
    assert max_rank(nn.Conv2d(4, 320, 3)) == 36
    assert max_rank(nn.Conv2d(320, 320, 1)) == 320


def test_disabled_module_is_the_base_layer():
    base = nn.Linear(4, 4)
    module = LoRAModule("x", base, dim=2, alpha=1)
    with torch.no_grad():
        module.lora_up.weight.fill_(1.0)
    x = torch.randn(2, 4)
    expected = nn.functional.linear(x, base.weight, base.bias)
    module.apply_to()
    module.enabled = False
    assert torch.equal(base(x), expected)
