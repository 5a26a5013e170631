"""Half precision: training steps under bf16/fp16 autocast and in full bf16/fp16 (`--full_bf16`,
`--full_fp16`: the host calls `network.to(dtype)`) stay finite; `set_multiplier`, `merge_to` and
`apply_max_norm_regularization` behave with half-precision adapters and base weights."""

import pytest
import torch

from lr_weights import lora
from lr_weights.adapters.functional import delta_weight
from lr_weights.models.tiny import build_tiny_sd

from tests.tolerances import assert_within, delta_norm64, eps, fp_tolerance, max_norm_rtol

HALF = [torch.bfloat16, torch.float16]
ARGS = {"conv_dim": "4", "conv_alpha": "2", "down_lr_weight": "sine+.25", "up_lr_weight": "cosine+.25", "loraplus_lr_ratio": "4"}


def inputs(text_encoder, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 4, 16, 16, generator=g).to(dtype)
    tokens = torch.randint(0, text_encoder.cfg.vocab, (2, text_encoder.cfg.max_length), generator=g)
    return latents, torch.tensor([10, 700]), tokens


def models(dtype=torch.float32):
    text_encoder, unet = build_tiny_sd(seed=0)
    for model in (text_encoder, unet):
        model.requires_grad_(False)
        model.to(dtype)
    return text_encoder, unet


def network_for(text_encoder, unet, dim=4, alpha=8.0):
    torch.manual_seed(1)
    network = lora.create_network(1.0, dim, alpha, None, text_encoder, unet, **ARGS)
    network.apply_to(text_encoder, unet, True, True)
    return network


def step(network, text_encoder, unet, optimizer, seed, dtype=torch.float32):
    latents, timesteps, tokens = inputs(text_encoder, seed, dtype)
    loss = unet(latents, timesteps, text_encoder(tokens)).float().pow(2).mean()
    loss.backward()
    grads = [p.grad for p in network.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    torch.nn.utils.clip_grad_norm_(list(network.get_trainable_params()), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def all_finite(network):
    return all(torch.isfinite(t).all() for t in network.state_dict().values())


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_training_under_autocast_stays_finite(dtype):
    text_encoder, unet = models()
    network = network_for(text_encoder, unet)
    optimizer = torch.optim.AdamW(network.prepare_optimizer_params(5e-4, 1e-3, 1e-3, with_descriptions=False), lr=1e-3)
    network.prepare_grad_etc(text_encoder, unet)
    network.on_epoch_start(text_encoder, unet)
    for seed in range(2):
        with torch.autocast("cpu", dtype=dtype):
            loss = step(network, text_encoder, unet, optimizer, seed)
        assert torch.isfinite(loss)
        network.apply_max_norm_regularization(1.0, "cpu")
    assert all_finite(network)
    assert all(p.dtype == torch.float32 for p in network.parameters())  # autocast leaves the master weights fp32
    assert all(m.lora_up.weight.abs().sum() > 0 for m in network.all_loras)


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_full_half_training_stays_finite(dtype):
    # --full_bf16 / --full_fp16: base model and network in half precision, no autocast.
    text_encoder, unet = models(dtype)
    network = network_for(text_encoder, unet)
    network.to(dtype)
    optimizer = torch.optim.AdamW(network.prepare_optimizer_params(5e-4, 1e-3, 1e-3, with_descriptions=False), lr=1e-3, eps=1e-4)
    network.prepare_grad_etc(text_encoder, unet)
    network.on_epoch_start(text_encoder, unet)
    for seed in range(2):
        assert torch.isfinite(step(network, text_encoder, unet, optimizer, seed, dtype))
        keys_scaled, mean_norm, max_norm = network.apply_max_norm_regularization(1.0, "cpu")
        assert all(map(lambda v: v == v and abs(v) != float("inf"), (mean_norm, max_norm)))
    assert all_finite(network) and all(p.dtype == dtype for p in network.parameters())
    assert all(float(m.alpha) == (2.0 if m.kind == "conv" else 8.0) for m in network.all_loras)  # alphas survive .to(half)


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_set_multiplier_in_half_precision(dtype):
    text_encoder, unet = models(dtype)
    data = inputs(text_encoder, dtype=dtype)
    with torch.no_grad():
        base = unet(data[0], data[1], text_encoder(data[2]))
    network = network_for(text_encoder, unet)
    network.to(dtype)
    with torch.no_grad():
        for module in network.all_loras:
            module.lora_up.weight.normal_(std=0.05)
        trained = unet(data[0], data[1], text_encoder(data[2]))
        network.set_multiplier(0.0)  # the host's diff-output preservation: base output exactly
        off = unet(data[0], data[1], text_encoder(data[2]))
        network.set_multiplier(1.0)
        back = unet(data[0], data[1], text_encoder(data[2]))
    assert torch.isfinite(trained).all() and (trained - base).abs().max() > 0
    assert torch.equal(off, base)
    assert torch.equal(back, trained)


@pytest.mark.parametrize(
    "file_dtype, model_dtype",
    [(torch.bfloat16, torch.float32), (torch.float16, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16)],
    ids=str,
)
def test_merge_to_with_half_precision(tmp_path, file_dtype, model_dtype):
    # --base_weights: merge a half-precision file into a model of any precision.
    text_encoder, unet = models()
    trained = network_for(text_encoder, unet)
    with torch.no_grad():
        for module in trained.all_loras:
            module.lora_up.weight.normal_(std=0.05)
    path = tmp_path / "base.safetensors"
    trained.save_weights(str(path), file_dtype, {})
    trained.restore()

    text_encoder, unet = models(model_dtype)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    network, weights = lora.create_network_from_weights(0.5, str(path), None, text_encoder, unet, for_inference=True)
    network.merge_to(text_encoder, unet, weights, model_dtype, "cpu")
    after = unet.state_dict()
    assert all(v.dtype == model_dtype and torch.isfinite(v).all() for v in after.values())
    for module in network.unet_loras:
        key = next(k for k, layer in unet.named_modules() if layer is module.base_layer) + ".weight"
        down, up = weights[module.lora_name + ".lora_down.weight"], weights[module.lora_name + ".lora_up.weight"]
        expected = before[key].float() + delta_weight(down, up, 0.5 * module.scale).reshape(before[key].shape)
        # W + ΔW in float32 (a rank-r sum and an add, on |W| + |up|·|down|·scale), then one rounding
        # to the model's dtype: half an ulp, u·|x|, or half the subnormal spacing near zero.
        magnitude = before[key].float().abs() + delta_weight(down.abs(), up.abs(), 0.5 * module.scale).reshape(before[key].shape)
        finfo = torch.finfo(model_dtype)
        tolerance = fp_tolerance(torch.float32, module.lora_dim + 2, magnitude) + finfo.eps / 2 * expected.abs() + finfo.tiny * finfo.eps / 2
        assert_within(after[key].float(), expected, tolerance, key)


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_max_norm_regularization_in_half_precision(dtype):
    text_encoder, unet = models()
    network = network_for(text_encoder, unet)
    with torch.no_grad():
        for module in network.all_loras:
            module.lora_up.weight.normal_(std=10.0)  # far above the max norm
    network.to(dtype)
    bound = max_norm_rtol(network.all_loras, dtype)  # tests/tolerances.py: float32 norm, rescaling in `dtype`
    keys_scaled, mean_norm, max_norm = network.apply_max_norm_regularization(0.5, "cpu")
    assert keys_scaled == len(network.all_loras)
    # The reported norm is norm · (max / norm), computed in float32: two roundings.
    assert 0 < mean_norm <= max_norm and max_norm == pytest.approx(0.5, rel=fp_tolerance(torch.float32, 2))
    assert all(p.dtype == dtype for p in network.parameters()) and all_finite(network)
    norms = [delta_norm64(m) for m in network.all_loras]
    assert max(norms) == pytest.approx(0.5, rel=bound)
