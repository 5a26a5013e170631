"""lr_weights.dylora: upstream's file layout and training rule, plus block LRs, SDXL TE1/TE2, pruning.

Expected keys and shapes come from upstream's rule, read from sd-scripts' `networks/dylora.py`:
it targets the same layers under the same names as `networks.lora` (same target classes, same
`prefix + path` names; convs only with conv_dim, which must equal network_dim and takes
network_alpha), and its `state_dict` concatenates the rank rows into `lora_down.weight` (dim, in)
/ (dim, in, k, k) (1x1 convs get (dim, in, 1, 1)) and `lora_up.weight` (out, dim) / (out, dim, 1,
1) — the shapes of a plain LoRA of that dim. So the recorded `networks.lora` figures at dim 4
(tests/fixtures/upstream) are upstream DyLoRA's figures at dim 4, with one exception: on SDXL
upstream DyLoRA prefixes both encoders `lora_te`, so TE2's modules overwrite TE1's of the same
name and its file holds only the 192 TE2 modules as `lora_te_*`; we keep all 264 as
`lora_te1_*`/`lora_te2_*` (CONTRACT §7.11).
"""

import math
import random

import pytest
import torch
from safetensors.torch import load_file

from lr_weights import dylora, lora
from lr_weights.adapters.dylora import DyLoRAModule, draw_slice
from lr_weights.errors import NetworkArgError
from lr_weights.models.tiny import build_tiny_sd

from tests.conftest import upstream_case
from tests.tolerances import assert_within, float64, float64_agreement, fp_tolerance
from tests.upstream_dylora import load_upstream_dylora, sd_scripts_dir
from tests.upstream_models import rebuild


def saved_shapes(network, tmp_path):
    path = tmp_path / "dylora.safetensors"
    network.save_weights(str(path), torch.float16, {"ss_network_module": "lr_weights.dylora"})
    return {key: list(value.shape) for key, value in load_file(str(path)).items()}


def expected_shapes(modules):
    shapes = {}
    for m in modules:
        shapes[m["name"] + ".lora_down.weight"] = m["down_shape"]
        shapes[m["name"] + ".lora_up.weight"] = m["up_shape"]
        shapes[m["name"] + ".alpha"] = []
    return shapes


def test_sd1_saved_keys_and_shapes_equal_upstream(tmp_path):
    # p03 is networks.lora at dim 4 with conv_dim 4: every attention, 1x1 and k x k conv target.
    case = upstream_case("p03_sd1_sine_cosine_locon")
    te, unet = rebuild("sd1")
    network = dylora.create_network(1.0, 4, 1, None, te, unet, unit="2", conv_dim="4")
    network.apply_to(te, unet, True, True)
    assert saved_shapes(network, tmp_path) == expected_shapes(case["result"]["modules"])


def test_sdxl_saved_keys_and_shapes_equal_upstream_with_te1_kept(tmp_path):
    case = upstream_case("p08_sdxl_sine_cosine")  # every SDXL LoRA target at dim 4
    te, unet = rebuild("sdxl")
    network = dylora.create_network(1.0, 4, 1, None, te, unet, unit="4")
    network.apply_to(te, unet, True, True)
    ours = saved_shapes(network, tmp_path)
    expected = expected_shapes(case["result"]["modules"])
    assert ours == expected
    # What upstream DyLoRA would save: TE2's modules under `lora_te_` and the U-Net.
    upstream_file = {k.replace("lora_te2_", "lora_te_", 1): v for k, v in ours.items() if not k.startswith("lora_te1_")}
    assert sum(k.startswith("lora_te_") and k.endswith(".alpha") for k in upstream_file) == 192
    assert sum(k.startswith("lora_te1_") and k.endswith(".alpha") for k in ours) == 72


def test_draw_follows_pythons_random_as_upstream():
    rng = random.Random(7)
    check = random.Random(7)
    for _ in range(50):
        start, end = draw_slice(12, 4, rng)
        raw = check.randint(0, 11)
        assert (start, end) == (raw - raw % 4, raw - raw % 4 + 4)


def tiny_batch(seed=5):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(2, 4, 16, 16, generator=generator),
        torch.tensor([10, 500]),
        torch.randint(0, 1000, (2, 16), generator=generator),
    )


def train_step(network, te, unet, optimizer):
    x, t, ids = tiny_batch()
    loss = unet(x, t, te(ids)).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def slices_touched(delta: torch.Tensor, axis: int, unit: int):
    """The unit-sized slices along `axis` in which `delta` is non-zero."""
    per_index = delta.abs().sum(dim=tuple(d for d in range(delta.dim()) if d != axis))
    return sorted({i // unit for i in torch.nonzero(per_index).flatten().tolist()})


OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9),  # Lion-like: moves on momentum alone
}


def tiny_dylora(seed=0):
    te, unet = build_tiny_sd(seed)
    torch.manual_seed(seed)
    network = dylora.create_network(1.0, 8, 8, None, te, unet, unit="2", conv_dim="8")
    network.apply_to(te, unet)
    with torch.no_grad():  # a non-zero lora_up, so that lora_down gets gradients from step 1
        generator = torch.Generator().manual_seed(seed)
        for module in network.all_loras:
            module.lora_up.weight.copy_(torch.randn(module.lora_up.weight.shape, generator=generator) * 0.1)
    network.train()
    return te, unet, network


@pytest.mark.parametrize("optimizer_name", sorted(OPTIMIZERS))
def test_one_slice_trains_and_the_others_stay(optimizer_name):
    # Upstream's frozen rows get no gradient, so no optimizer moves them. Ours get a zero gradient;
    # the settle after each step puts back whatever momentum or weight decay did to them.
    te, unet, network = tiny_dylora()
    optimizer = OPTIMIZERS[optimizer_name](network.prepare_optimizer_params(1e-2, 1e-2, 1e-2, with_descriptions=False))
    initial = {k: v.clone() for k, v in network.state_dict().items()}
    trained = {m.lora_name: set() for m in network.all_loras}
    random.seed(0)
    for step in range(3):
        before = {k: v.clone() for k, v in network.state_dict().items()}
        train_step(network, te, unet, optimizer)
        after = network.state_dict()
        for module in network.all_loras:
            name = module.lora_name
            up = slices_touched(after[name + ".lora_up.weight"] - before[name + ".lora_up.weight"], 1, 2)
            down = slices_touched(after[name + ".lora_down.weight"] - before[name + ".lora_down.weight"], 0, 2)
            assert len(up) == 1 and down == up, (step, name, up, down)  # exactly the drawn slice moved
            trained[name].update(up)
            never = [i for i in range(8) if i // 2 not in trained[name]]
            assert torch.equal(after[name + ".lora_down.weight"][never], initial[name + ".lora_down.weight"][never])
            assert torch.equal(after[name + ".lora_up.weight"][:, never], initial[name + ".lora_up.weight"][:, never])
    assert any(len(t) > 1 for t in trained.values())  # some module trained a second slice


def run_steps(optimizer_name, steps=3):
    te, unet, network = tiny_dylora()
    optimizer = OPTIMIZERS[optimizer_name](network.prepare_optimizer_params(1e-2, 1e-2, 1e-2, with_descriptions=False))
    random.seed(0)
    for _ in range(steps):
        train_step(network, te, unet, optimizer)
    return {k: v.clone() for k, v in network.state_dict().items()}


def test_sgd_gives_what_it_gave_without_settling(monkeypatch):
    # SGD without momentum or weight decay never moves a row with a zero gradient: nothing to undo.
    settled = run_steps("sgd")
    monkeypatch.setattr(DyLoRAModule, "settle", lambda self, stepped=None: None)
    unsettled = run_steps("sgd")
    assert all(torch.equal(v, unsettled[k]) for k, v in settled.items())


def test_max_norm_rescaling_is_kept_by_the_next_step():
    te, unet, network = tiny_dylora()
    optimizer = OPTIMIZERS["adamw"](network.prepare_optimizer_params(1e-2, 1e-2, 1e-2, with_descriptions=False))
    random.seed(0)
    train_step(network, te, unet, optimizer)
    keys_scaled, _, _ = network.apply_max_norm_regularization(1e-3, "cpu")
    assert keys_scaled > 0
    rescaled = {k: v.clone() for k, v in network.state_dict().items()}
    train_step(network, te, unet, optimizer)
    after = network.state_dict()
    for module in network.all_loras:  # only the slice drawn in step 2 left the rescaled values
        name = module.lora_name
        up = slices_touched(after[name + ".lora_up.weight"] - rescaled[name + ".lora_up.weight"], 1, 2)
        assert len(up) == 1, (name, up)


class RawMomentum:
    """An optimizer outside torch.optim (no step hook) with momentum and weight decay.

    `raw=True` writes through `.data`, like a kernel handed a raw pointer: the version counter does
    not move, so only settle()'s value comparison notices. `raw=False` writes in place under
    no_grad: the next forward notices through the version counter.
    """

    def __init__(self, params, raw, lr=1e-2, momentum=0.9, weight_decay=0.1):
        self.params = [p for group in params for p in group["params"]]
        self.raw, self.lr, self.momentum, self.weight_decay = raw, lr, momentum, weight_decay
        self.buffers = {}

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        for p in self.params:
            if p.grad is None:
                continue
            buf = self.buffers.setdefault(id(p), torch.zeros_like(p))
            buf.mul_(self.momentum).add_(p.grad)
            target = p.data if self.raw else p
            target.mul_(1 - self.lr * self.weight_decay).add_(buf, alpha=-self.lr)


@pytest.mark.parametrize("raw", [True, False])
def test_a_saved_file_holds_settled_weights_without_the_step_hook(tmp_path, raw):
    te, unet, network = tiny_dylora()
    optimizer = RawMomentum(network.prepare_optimizer_params(1e-2, 1e-2, 1e-2, with_descriptions=False), raw=raw)
    random.seed(0)
    for step in range(3):
        # state_dict settles (here, for raw=True, the only thing that does: no hook, no version bump)
        before = {k: v.clone() for k, v in network.state_dict().items()}
        train_step(network, te, unet, optimizer)
    drawn = {m.lora_name: set(m._trained) for m in network.all_loras}  # the slice each trained last
    path = tmp_path / "d.safetensors"
    network.save_weights(str(path), None, {})
    saved = load_file(str(path))
    for module in network.all_loras:
        name = module.lora_name
        assert len(drawn[name]) == 1
        frozen = [i for i in range(8) if i - i % 2 not in drawn[name]]
        trained = [i for i in range(8) if i not in frozen]
        for key, index in ((".lora_down.weight", (frozen,)), (".lora_up.weight", (slice(None), frozen))):
            assert torch.equal(saved[name + key][index], before[name + key][index]), (name, key)
        assert not torch.equal(saved[name + ".lora_up.weight"][:, trained], before[name + ".lora_up.weight"][:, trained])
        assert torch.equal(saved[name + ".lora_up.weight"], module.lora_up.weight.detach())  # the network itself is settled


class PerRowReference(torch.nn.Module):
    """Upstream's layout in miniature: one nn.Parameter per rank row, the frozen ones detached."""

    def __init__(self, module: DyLoRAModule):
        super().__init__()
        down, up = module.lora_down.weight.detach(), module.lora_up.weight.detach()
        self.down = torch.nn.ParameterList([torch.nn.Parameter(down[i : i + 1].clone()) for i in range(module.lora_dim)])
        self.up = torch.nn.ParameterList([torch.nn.Parameter(up[:, i : i + 1].clone()) for i in range(module.lora_dim)])
        self.dim, self.scale = module.lora_dim, module.multiplier * module.scale  # no reference to module: not its parameters

    def forward(self, x, base, start, end):
        pick = lambda i, p: p if start <= i < end else p.detach()
        down = torch.cat([pick(i, p) for i, p in enumerate(self.down)], 0)
        up = torch.cat([pick(i, p) for i, p in enumerate(self.up)], 1)
        scale = self.scale * math.sqrt(self.dim / end)
        return base(x) + torch.nn.functional.linear(torch.nn.functional.linear(x, down) * scale, up)

    def weights(self):
        return torch.cat(list(self.down), 0).detach(), torch.cat(list(self.up), 1).detach()


def test_adamw_update_equals_a_per_row_parameter_implementation(monkeypatch):
    torch.manual_seed(0)
    base = torch.nn.Linear(5, 7).double()
    module = DyLoRAModule("lora_unet_x", base, 6, 3, unit=2).double()
    with torch.no_grad():
        module.lora_up.weight.normal_()
    reference = PerRowReference(module)
    module.apply_to()
    module.train()
    hyper = dict(lr=1e-2, betas=(0.9, 0.999), weight_decay=0.1)
    ours_opt = torch.optim.AdamW(module.parameters(), **hyper)
    ref_opt = torch.optim.AdamW(reference.parameters(), **hyper)
    starts = [0, 0, 4, 0]  # rows 0-1 twice, rows 4-5 first at step 3, rows 0-1 again after a pause
    draws = iter(starts)
    monkeypatch.setattr("lr_weights.adapters.dylora.draw_slice", lambda dim, unit, rng=None: (lambda s: (s, s + unit))(next(draws)))
    x = torch.randn(3, 5, dtype=torch.float64)
    target = torch.randn(3, 7, dtype=torch.float64)
    for step, start in enumerate(starts, 1):
        before = module.lora_down.weight.detach().clone(), module.lora_up.weight.detach().clone()
        for net, opt, out in ((module, ours_opt, lambda: base(x)), (reference, ref_opt, lambda: reference(x, module._base_forward, start, start + 2))):
            opt.zero_grad()
            (out() - target).pow(2).sum().backward()
            opt.step()
        module.settle(stepped=True)  # what DyLoRANetwork's optimizer step hook does after each step
        ours = module.lora_down.weight.detach(), module.lora_up.weight.detach()
        ref = reference.weights()
        if step <= 2:
            # Every trained row has trained at every step so far: same moments, same step count.
            assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1]), step
            continue
        # Frozen rows stay exactly where the step found them (rows 2-3 never trained: their init),
        # and rows with the same history as upstream's (0-1 until step 4, 2-3 always) equal its rows.
        frozen = [i for i in range(6) if not start <= i < start + 2]
        assert torch.equal(ours[0][frozen], before[0][frozen]) and torch.equal(ours[1][:, frozen], before[1][:, frozen])
        same = [0, 1, 2, 3] if step == 3 else [2, 3]
        assert torch.equal(ours[0][same], ref[0][same]) and torch.equal(ours[1][:, same], ref[1][:, same])
        if step == 3:
            # Rows 4-5 train for the first time at step 3: same gradient, same weight decay, but Adam's
            # bias correction uses the tensor's step count (3) where upstream's row counts 1, so the
            # Adam part of the update is (0.1 / (1 - 0.9**3)) / sqrt(0.001 / (1 - 0.999**3)) = 0.639
            # of upstream's. Not a tolerance but the known factor, up to Adam's eps and rounding:
            # with A = 0.1/(1-0.9³), B = √(0.001/(1-0.999³)) ours is lr·A·g/(B|g|+ε) and upstream's
            # lr·g/(|g|+ε), so ours − (A/B)·upstream's = lr·A·g·ε·(B−1)/((B|g|+ε)·B·(|g|+ε)), at
            # most lr·A·ε·|B−1|/(B²·|g|); the float64 rounding of the update and of the subtraction
            # of the decayed weight is bounded by fp_tolerance on |w| + the update's size.
            lr, eps_adam = hyper["lr"], 1e-8  # AdamW's default eps
            a, b = 0.1 / (1 - 0.9**3), (0.001 / (1 - 0.999**3)) ** 0.5
            factor = a / b
            decay = 1 - lr * hyper["weight_decay"]
            ours_adam = ours[1][:, 4:6] - before[1][:, 4:6] * decay
            ref_adam = ref[1][:, 4:6] - before[1][:, 4:6] * decay
            g = module.lora_up.weight.grad[:, 4:6].abs()  # this step's gradient, still held
            adam_eps_term = lr * a * eps_adam * abs(b - 1) / (b**2 * g)
            rounding = fp_tolerance(torch.float64, 16, before[1][:, 4:6].abs() + lr * (1 + factor))
            assert_within(ours_adam, ref_adam * factor, adam_eps_term + rounding, "Adam part of rows 4-5")
            assert not (ours_adam - ref_adam * factor * 1.001).abs().le(adam_eps_term + rounding).all()  # can fail
        # Step 4: rows 0-1 come back after a pause; their moments decayed during it (upstream's did
        # not) and the step counts differ (4 vs 3), so they differ by more than rounding. Nothing
        # exact to check beyond the frozen rows above.


def test_gradient_is_zero_outside_the_slice_and_scale_is_upstreams():
    te, unet = build_tiny_sd(0)
    network = dylora.create_network(1.0, 8, 4, None, te, unet, unit="4")
    module = next(m for m in network.unet_loras if m.kind == "linear")
    module.apply_to()
    module.train()
    with torch.no_grad():
        module.lora_up.weight.normal_()
    layer = module.base_layer
    x = torch.randn(3, 5, layer.in_features)
    random.seed(1)
    start, end = draw_slice(8, 4)
    random.seed(1)
    out = layer(x)
    scale = (4 / 8) * (8 / end) ** 0.5
    expected_delta = (x @ module.lora_down.weight.T) @ module.lora_up.weight.T * scale
    # Rounding bound (tests/tolerances.py): the chain on absolute values, n = in + rank + 2 scale
    # multiplies + the base add and its subtraction; the base output's own size enters through the add.
    base_out = module._base_forward(x)
    magnitude = (x.abs() @ module.lora_down.weight.abs().T) @ module.lora_up.weight.abs().T * scale + 2 * base_out.abs()
    tolerance = fp_tolerance(torch.float32, layer.in_features + 8 + 4, magnitude.detach())
    assert_within(out - base_out, expected_delta, tolerance, "DyLoRA delta")
    assert not ((out - base_out) - expected_delta * 1.01).abs().le(tolerance).all()  # a 1 % scale error shows
    out.sum().backward()
    frozen = [i for i in range(8) if not start <= i < end]
    assert module.lora_down.weight.grad[frozen].abs().sum() == 0
    assert module.lora_up.weight.grad[:, frozen].abs().sum() == 0
    assert module.lora_down.weight.grad[start:end].abs().sum() > 0
    assert module.lora_up.weight.grad[:, start:end].abs().sum() > 0


def test_eval_is_the_plain_lora_in_the_saved_file(tmp_path):
    # float64 on both sides (tests/tolerances.py): the U-Net is non-linear, so no float32 bound; the
    # file is saved in float64, so the plain LoRA runs with exactly our weights.
    with float64():
        te, unet = build_tiny_sd(0)
        x, t, ids = tiny_batch()
        with torch.no_grad():
            base = unet(x, t, te(ids))
        network = dylora.create_network(0.7, 8, 4, None, te, unet, unit="4", conv_dim="4")
        with torch.no_grad():
            for module in network.all_loras:
                module.lora_up.weight.normal_(std=0.1)
        network.apply_to(te, unet)
        network.eval()
        with torch.no_grad():
            ours = unet(x, t, te(ids))
        path = tmp_path / "d.safetensors"
        network.save_weights(str(path), None, {})
        assert all(m._snapshot is None for m in network.all_loras)  # no training, no extra copy
        network.restore()
        te2, unet2 = build_tiny_sd(0)
        plain, weights = lora.create_network_from_weights(0.7, str(path), None, te2, unet2)
        plain.apply_to(te2, unet2)
        plain.load_weights(str(path))
        plain.eval()
        with torch.no_grad():
            theirs = unet2(x, t, te2(ids))
    assert ours.dtype == theirs.dtype == torch.float64
    tolerance = float64_agreement(ours.abs().max().item())
    assert (ours - base).abs().max().item() > 1e3 * tolerance  # the LoRA's effect: a wrong scale shows
    assert_within(theirs, ours, tolerance, "plain LoRA from the file against DyLoRA in eval")


def test_block_lr_groups_and_descriptions_match_lr_weights_lora():
    args = dict(down_lr_weight="sine+.25", mid_lr_weight="1", up_lr_weight="cosine+.25", loraplus_unet_lr_ratio="4", conv_dim="4")
    results = []
    for module in (lora, dylora):
        te, unet = build_tiny_sd(0)
        network = module.create_network(1.0, 4, 1, None, te, unet, **args)
        network.apply_to(te, unet)
        params, descriptions = network.prepare_optimizer_params(1e-5, 1e-4, 1e-3, with_descriptions=True)
        results.append((descriptions, [g["lr"] for g in params], [len(g["params"]) for g in params]))
    assert results[0] == results[1]
    descriptions = results[1][0]
    assert descriptions[0] == "textencoder" and "unet_block1" in descriptions and "unet_block1 plus" in descriptions
    assert descriptions[-2:] == ["unet_block12", "unet_block12 plus"]  # upstream: the mid block comes last


def test_zero_weight_blocks_are_pruned_and_block_dims_are_honoured():
    te, unet = build_tiny_sd(0)
    network = dylora.create_network(
        1.0, 4, 1, None, te, unet, unit="2",
        down_lr_weight="0,0,0,1,1,1,1,1,1,1,1,1", up_lr_weight="1,1,1,1,1,1,1,1,1,1,1,0",
        block_dims=",".join(["4"] * 12 + ["8"] + ["2"] * 12),
    )
    blocks = {network.block_of(m) for m in network.unet_loras}
    assert 1 not in blocks and 2 not in blocks and 24 not in blocks and 4 in blocks
    assert {m.lora_dim for m in network.unet_loras if network.block_of(m) == 12} == {8}
    assert {m.lora_dim for m in network.unet_loras if network.block_of(m) == 16} == {2}
    table = {row.name: row for row in network.block_table()}
    assert table["IN01"].status == "pruned" and table["OUT11"].status == "pruned" and table["IN04"].status == "train"


def test_threshold_prunes_per_block():
    te, unet = build_tiny_sd(0)
    network = dylora.create_network(1.0, 4, 1, None, te, unet, unit="1", down_lr_weight="sine", up_lr_weight="cosine", block_lr_zero_threshold="0.3")
    weights = network.block_lr_weight
    kept = {network.block_of(m) for m in network.unet_loras}
    assert all(weights[b] > 0.3 for b in kept)
    assert 1 not in kept and 24 not in kept


def test_dims_must_be_multiples_of_unit():
    te, unet = build_tiny_sd(0)
    with pytest.raises(NetworkArgError, match="network_dim.*multiple of unit=3"):
        dylora.create_network(1.0, 4, 1, None, te, unet, unit="3")
    with pytest.raises(NetworkArgError, match="block_dims.*M00=5"):
        dylora.create_network(1.0, 4, 1, None, te, unet, unit="2", block_dims=",".join(["4"] * 12 + ["5"] + ["4"] * 12))
    with pytest.raises(NetworkArgError, match="unit"):
        dylora.create_network(1.0, 4, 1, None, te, unet, unit="0")


def test_sdxl_block_lr_and_te_prefixes():
    te, unet = rebuild("sdxl")
    network = dylora.create_network(1.0, 4, 1, None, te, unet, unit="4", down_lr_weight="1,1,1,1,0,0,1,1,1", mid_lr_weight="1,0,1", up_lr_weight="zeros+0.5")
    names = [m.lora_name for m in network.text_encoder_loras]
    assert sum(n.startswith("lora_te1_") for n in names) == 72 and sum(n.startswith("lora_te2_") for n in names) == 192
    assert 5 not in {network.block_of(m) for m in network.unet_loras}  # IN04 pruned
    assert 11 not in {network.block_of(m) for m in network.unet_loras}  # M01 pruned


def test_from_weights_keeps_dims_and_checks_unit(tmp_path):
    te, unet = build_tiny_sd(0)
    network = dylora.create_network(1.0, 8, 4, None, te, unet, unit="4")
    path = tmp_path / "d.safetensors"
    network.save_weights(str(path), None, {})
    te2, unet2 = build_tiny_sd(0)
    again, _ = dylora.create_network_from_weights(1.0, str(path), None, te2, unet2, unit="4")
    assert isinstance(again.all_loras[0], DyLoRAModule) and {m.lora_dim for m in again.all_loras} == {8}
    with pytest.raises(NetworkArgError, match="unit"):
        dylora.create_network_from_weights(1.0, str(path), None, te2, unet2, unit="3")
    dylora.create_network_from_weights(1.0, str(path), None, te2, unet2, for_inference=True, unit="3")


@pytest.mark.skipif(sd_scripts_dir() is None, reason="SD_SCRIPTS_DIR not set (upstream networks/dylora.py is the oracle)")
@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_same_seed_gives_upstreams_tensors_at_init_and_after_a_step(optimizer_name):
    # AdamW with weight decay: frozen rows must not decay (upstream: no gradient). One step only:
    # from the second, Adam's per-tensor step count makes a newly trained row's update differ.
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1), "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1)}[optimizer_name]
    upstream = load_upstream_dylora()
    networks = []
    # float64 on both sides (tests/tolerances.py): Adam divides by |g| + eps, so where a gradient
    # element is ~eps a float32 rounding difference of our scaling order (rank side vs output side)
    # becomes an O(lr) update difference; in float64 it stays far below float32's resolution.
    with float64():
        for build in (upstream.create_network, dylora.create_network):
            te, unet = build_tiny_sd(0)
            torch.manual_seed(1)
            kwargs = dict(unit="2", conv_dim="8") if build is upstream.create_network else dict(unit="2", conv_dim="8", conv_alpha="4")
            network = build(1.0, 8, 4, None, te, unet, **kwargs)
            network.apply_to(te, unet, True, True)
            initial = {k: v.clone() for k, v in network.state_dict().items()}
            network.train()
            params = network.prepare_optimizer_params(0.1, 0.1, 0.1)
            params = params[0] if isinstance(params, tuple) else params
            random.seed(3)
            train_step(network, te, unet, make(params))
            networks.append((initial, {k: v.clone() for k, v in network.state_dict().items()}))
    (up_init, up_after), (our_init, our_after) = networks
    assert up_init.keys() == our_init.keys()
    assert all(torch.equal(up_init[k], our_init[k]) for k in up_init)
    assert all(v.dtype == torch.float64 for k, v in our_after.items() if not k.endswith(".alpha"))
    # One tolerance for the whole state: float32's resolution at the largest weight. What it must
    # catch — weight decay on frozen rows (what settling removes), lr·wd·|w| ~ 1e-3, or a wrong
    # scale — is orders of magnitude above it.
    tolerance = float64_agreement(max(v.abs().max().item() for v in up_after.values()))
    for key in up_after:
        assert_within(our_after[key], up_after[key], tolerance, key)
    if optimizer_name == "sgd":
        return
    for key in up_after:
        if key.endswith(".alpha"):
            continue
        axis = 0 if key.endswith("lora_down.weight") else 1
        moved = slices_touched(up_after[key] - up_init[key], axis, 2)
        frozen = [i for i in range(8) if i // 2 not in moved]
        assert torch.equal(our_after[key].index_select(axis, torch.tensor(frozen)), up_init[key].index_select(axis, torch.tensor(frozen))), key


def test_table_reports_weight_without_dim_and_dim_without_weight():
    te, unet = build_tiny_sd(0)
    network = dylora.create_network(
        1.0, 4, 1, None, te, unet, unit="2",
        block_dims=",".join(["4"] * 4 + ["0"] + ["4"] * 20),  # IN04: weight 1 but dim 0
        down_lr_weight="1,1,1,1,1,1,1,1,0,1,1,1",  # IN08: dim 4 but weight 0
    )
    status = {row.name: row.status for row in network.block_table()}
    assert status["IN04"] == "dim 0: not trained"
    assert status["IN08"] == "pruned"
    assert status["IN03"] == "no modules"  # a downsampler: no attention layers to adapt


def test_unit_given_to_plain_lora_is_named_as_ignored(caplog):
    te, unet = build_tiny_sd(0)
    lora.create_network(1.0, 4, 1, None, te, unet, unit="4")
    assert "unit=4 is a DyLoRA setting" in caplog.text


def test_the_network_settles_right_after_each_optimizer_step_and_unhooks_when_collected():
    import gc

    from torch.optim import optimizer as optim_module

    hooks_before = len(optim_module._global_optimizer_post_hooks)
    te, unet = build_tiny_sd(seed=0)
    te.requires_grad_(False)
    unet.requires_grad_(False)
    random.seed(0)
    network = dylora.create_network(1.0, 16, 4, None, te, unet, unit="2")
    network.apply_to(te, unet)
    params, _ = network.prepare_optimizer_params(1e-3, 1e-3, 1e-3, with_descriptions=True)
    optimizer = torch.optim.AdamW(params, weight_decay=0.1)
    network.train()
    module = network.unet_loras[0]
    initial = module.lora_down.weight.detach().clone()
    had_gradient = torch.zeros(16, dtype=torch.bool)
    for _ in range(3):  # one forward per step: at most 6 of 16 rows train
        train_step(network, te, unet, optimizer)
        # lora_up starts at zero, so lora_down's trained rows may get an all-zero gradient at first;
        # lora_up's trained columns always get a non-zero one.
        had_gradient |= module.lora_up.weight.grad.transpose(0, 1).flatten(1).abs().sum(1) > 0
        # Right after the step, before any forward: rows that never trained are still their init,
        # although AdamW's weight decay touched the whole tensor.
        untouched = (~had_gradient).nonzero().flatten()
        assert len(untouched) > 0
        assert torch.equal(module.lora_down.weight.detach()[untouched], initial[untouched])
    assert len(optim_module._global_optimizer_post_hooks) == hooks_before + 1
    del network, module, params, optimizer
    gc.collect()
    assert len(optim_module._global_optimizer_post_hooks) == hooks_before
