"""The sd-scripts host contract replayed on a tiny runnable SD model (CONTRACT §1).

Each test calls the module in the order train_network.py does; the tiny model has the exact
module names of an SD1 U-Net and CLIP text encoder (lr_weights.models.tiny).
"""

import importlib.util
import logging
import subprocess
import sys
import textwrap

import pytest
import torch

from lr_weights import lora
from lr_weights.files.io import load_lora_file, read_metadata
from lr_weights.models.tiny import build_tiny_sd

from tests.tolerances import assert_within, delta_norm64, float64, float64_agreement, fp_tolerance, max_norm_rtol, on_grid

BLOCK_ARGS = {"down_lr_weight": "sine+.25", "mid_lr_weight": "1", "up_lr_weight": "cosine+.25", "block_lr_zero_threshold": "0"}


def batch(text_encoder, seed=0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 4, 16, 16, generator=g)
    tokens = torch.randint(0, text_encoder.cfg.vocab, (2, text_encoder.cfg.max_length), generator=g)
    timesteps = torch.tensor([10, 700])
    return latents, timesteps, tokens


def predict(text_encoder, unet, data):
    latents, timesteps, tokens = data
    return unet(latents, timesteps, text_encoder(tokens))


def frozen(models):
    for model in models:
        model.requires_grad_(False)
    return models


def train_steps(network, text_encoder, unet, groups, steps=3, max_norm=None):
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    network.prepare_grad_etc(text_encoder, unet)
    network.on_epoch_start(text_encoder, unet)
    for step in range(steps):
        data = batch(text_encoder, seed=step)
        loss = predict(text_encoder, unet, data).pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(network.get_trainable_params()), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if max_norm is not None:
            network.apply_max_norm_regularization(max_norm, "cpu")


def make_network(text_encoder, unet, dim=4, alpha=1.0, **kwargs):
    torch.manual_seed(1)
    network = lora.create_network(1.0, dim, alpha, None, text_encoder, unet, neuron_dropout=None, **kwargs)
    network.apply_to(text_encoder, unet, True, True)
    return network


def test_newest_host_order_trains_only_adapters(tmp_path):
    text_encoder, unet = frozen(build_tiny_sd(seed=0))
    base_before = {k: v.clone() for k, v in list(unet.state_dict().items()) + list(text_encoder.state_dict().items())}
    # Newest hosts inject dropout=None when the user gave none (CONTRACT §1.3).
    network = make_network(text_encoder, unet, dropout=None, **BLOCK_ARGS)
    results = network.prepare_optimizer_params(5e-4, 1e-3, 1e-3)
    assert isinstance(results, tuple)
    params, lr_descriptions = results
    assert lr_descriptions[0] == "textencoder" and lr_descriptions[-1] == "unet_block12"
    network.to(torch.float32)
    train_steps(network, text_encoder, unet, params, max_norm=10.0)
    network.set_multiplier(0.0)
    network.set_multiplier(1.0)

    base_after = {k: v for k, v in list(unet.state_dict().items()) + list(text_encoder.state_dict().items())}
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    assert all(m.lora_up.weight.abs().sum() > 0 for m in network.all_loras)

    path = tmp_path / "out.safetensors"
    network.save_weights(str(path), torch.float16, {"ss_network_module": "lr_weights.lora"})
    saved = load_lora_file(path)
    assert all(k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in saved)
    assert {v.dtype for v in saved.values()} == {torch.float16}
    assert saved["lora_unet_mid_block_attentions_0_proj_in.alpha"].dim() == 0
    assert len(saved) == 3 * len(network.all_loras)


GUI_ERA_TRAINER = '''
import torch

def train(network, text_encoder_lr, unet_lr, learning_rate):
    # As the v0.6.5 trainer: the return value goes straight into the optimizer.
    trainable_params = network.prepare_optimizer_params(text_encoder_lr, unet_lr, learning_rate)
    return torch.optim.AdamW(trainable_params, lr=learning_rate)
'''


def test_gui_era_host_gets_a_plain_list(tmp_path):
    """A trainer without `lr_descriptions` (sd-scripts < v0.9) needs a list: a tuple breaks it."""
    (tmp_path / "train_network.py").write_text(textwrap.dedent(GUI_ERA_TRAINER))
    spec = importlib.util.spec_from_file_location("gui_era_train_network", tmp_path / "train_network.py")
    trainer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trainer)

    text_encoder, unet = frozen(build_tiny_sd(seed=0))
    network = make_network(text_encoder, unet, **BLOCK_ARGS)
    optimizer = trainer.train(network, None, 1e-3, 1e-3)
    lrs = [group["lr"] for group in optimizer.param_groups]
    assert lrs[0] == 1e-3  # text encoder: learning_rate when text_encoder_lr is None
    assert lrs[1] == pytest.approx(1e-3 * 0.39231483827328517)


def test_fresh_network_leaves_output_unchanged():
    text_encoder, unet = frozen(build_tiny_sd(seed=0))
    data = batch(text_encoder)
    with torch.no_grad():
        before = predict(text_encoder, unet, data)
        make_network(text_encoder, unet, conv_dim="4", **BLOCK_ARGS)
        after = predict(text_encoder, unet, data)
    assert torch.equal(before, after)


def trained_network(tmp_path, **kwargs):
    text_encoder, unet = frozen(build_tiny_sd(seed=0))
    network = make_network(text_encoder, unet, **kwargs)
    params, _ = network.prepare_optimizer_params(5e-4, 1e-3, 1e-3, with_descriptions=True)
    train_steps(network, text_encoder, unet, params)
    network.eval()
    return network, text_encoder, unet


def test_save_load_gives_the_same_output(tmp_path):
    network, text_encoder, unet = trained_network(tmp_path, conv_dim="4", conv_alpha="2", **BLOCK_ARGS)
    data = batch(text_encoder, seed=9)
    with torch.no_grad():
        expected = predict(text_encoder, unet, data)
    path = tmp_path / "lora.safetensors"
    network.save_weights(str(path), torch.float32, {})

    text_encoder2, unet2 = frozen(build_tiny_sd(seed=0))
    torch.manual_seed(123)
    fresh = lora.create_network(1.0, 4, 1.0, None, text_encoder2, unet2, conv_dim="4", conv_alpha="2", **BLOCK_ARGS)
    fresh.apply_to(text_encoder2, unet2)
    info = fresh.load_weights(str(path))
    assert not info.missing_keys and not info.unexpected_keys
    # The file holds the float32 tensors bit for bit, so the same kernels on the same inputs give
    # the same bits: no tolerance.
    with torch.no_grad():
        assert torch.equal(predict(text_encoder2, unet2, data), expected)


def test_create_network_from_weights_recovers_dims_and_alphas(tmp_path):
    dims = "0,2,4,0,8,4,0,4,4,0,0,2,8,0,0,0,4,4,4,2,2,2,4,4,2"
    alphas = ",".join(str(0.5 * (i + 1)) for i in range(25))
    network, _, _ = trained_network(tmp_path, block_dims=dims, block_alphas=alphas)
    path = tmp_path / "dims.safetensors"
    network.save_weights(str(path), torch.bfloat16, {})

    text_encoder, unet = frozen(build_tiny_sd(seed=0))
    rebuilt, weights = lora.create_network_from_weights(1.0, str(path), None, text_encoder, unet)
    assert set(weights) == set(load_lora_file(path))
    original = {m.lora_name: (m.lora_dim, float(m.alpha)) for m in network.all_loras}
    recovered = {m.lora_name: (m.lora_dim, float(m.alpha)) for m in rebuilt.all_loras}
    assert recovered == original
    assert {d for d, _ in recovered.values()} == {2, 4, 8}


def base_weights_on_grid(*models):
    for model in models:
        for layer in model.modules():
            if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
                on_grid(layer.weight, 22)
                assert layer.weight.abs().max() < 1.5  # + |ΔW| <= 4 · 2⁻⁴ · 1 · 1/4 stays < 2


def test_merge_to_equals_the_patched_forward(tmp_path):
    """merge_to computes W + ΔW in float32 and the U-Net in between is non-linear, so no float32
    bound exists for the output. Instead the merge is made exact and both models run in float64
    (tests/tolerances.py): lora_down on a 2⁻⁸ grid (|w| < 1), lora_up on a 2⁻¹² grid (|w| < 2⁻⁴),
    scale α/dim = 1/4, so every product up·down has at most 16 significant bits and ΔW sums them
    on a 2⁻²² grid; base weights on the same grid with |W + ΔW| < 2 need at most 23 bits. So ΔW,
    W + ΔW and the float32 file are exact, and the two forwards differ only by float64 rounding."""
    with float64():
        network, text_encoder, unet = trained_network(tmp_path, conv_dim="4", **BLOCK_ARGS)
        base_weights_on_grid(text_encoder, unet)
        for module in network.all_loras:
            assert module.scale * module.multiplier == 0.25
            on_grid(module.lora_down.weight, 8)
            on_grid(module.lora_up.weight, 12)
            assert module.lora_down.weight.abs().max() < 1 and module.lora_up.weight.abs().max() < 2**-4
        assert sum(int(m.lora_up.weight.count_nonzero()) for m in network.unet_loras) > 0
        data = batch(text_encoder, seed=5)
        path = tmp_path / "merge.safetensors"
        network.save_weights(str(path), torch.float32, {})
        with torch.no_grad():
            patched = predict(text_encoder, unet, data)
            network.set_multiplier(0.0)
            unpatched = predict(text_encoder, unet, data)

        text_encoder2, unet2 = frozen(build_tiny_sd(seed=0))
        base_weights_on_grid(text_encoder2, unet2)
        merger, weights = lora.create_network_from_weights(1.0, str(path), None, text_encoder2, unet2, for_inference=True)
        assert merger.is_mergeable()
        merger.merge_to(text_encoder2, unet2, weights, torch.float64, "cpu")
        with torch.no_grad():
            merged = predict(text_encoder2, unet2, data)
    assert merged.dtype == torch.float64
    tolerance = float64_agreement(patched.abs().max().item())
    assert (patched - unpatched).abs().max().item() > 1e3 * tolerance  # the LoRA's effect: a wrong merge shows
    assert_within(merged, patched, tolerance, "merged against patched")


def test_zero_weight_blocks_have_no_modules_params_or_groups(tmp_path):
    args = {"down_lr_weight": "0,1,0,1,1,1,1,0,1,1,1,1", "mid_lr_weight": "0", "up_lr_weight": "1,1,1,1,0,1,1,1,1,1,1,1"}
    network, _, _ = trained_network(tmp_path, conv_dim="4", **args)
    zero_blocks = {2, 7, 12, 17}
    assert not any(network.block_of(m) in zero_blocks for m in network.unet_loras)
    names = " ".join(network.state_dict())
    assert "down_blocks_0_attentions_1" not in names  # IN02
    assert "mid_block" not in names
    _, descriptions = network.prepare_optimizer_params(1e-4, 1e-4, 1e-4, with_descriptions=True)
    assert not {f"unet_block{b}" for b in zero_blocks} & set(descriptions)
    pruned = [r.name for r in network.block_table() if r.status == "pruned"]
    assert pruned == ["IN00", "IN02", "IN07", "M00", "OUT04"]


def test_text_encoder_only_and_unet_only():
    text_encoder, unet = frozen(build_tiny_sd(seed=0))
    network = lora.create_network(1.0, 4, 1, None, text_encoder, unet, **BLOCK_ARGS)
    network.apply_to(text_encoder, unet, apply_text_encoder=False, apply_unet=True)
    assert not network.text_encoder_loras and not any(k.startswith("lora_te") for k in network.state_dict())
    _, descriptions = network.prepare_optimizer_params(1e-4, 1e-4, 1e-4, with_descriptions=True)
    assert "textencoder" not in descriptions


def test_load_weights_with_other_dims_names_keys_and_shapes(tmp_path):
    network, _, _ = trained_network(tmp_path)
    path = tmp_path / "dim4.safetensors"
    network.save_weights(str(path), None, {})
    text_encoder, unet = frozen(build_tiny_sd(seed=0))
    other = make_network(text_encoder, unet, dim=8)
    with pytest.raises(ValueError) as raised:
        other.load_weights(str(path))
    message = str(raised.value)
    assert "lora_down.weight" in message and "(4, 32)" in message and "(8, 32)" in message and "--dim_from_weights" in message


def test_loaded_alpha_sets_the_scale(tmp_path):
    # CONTRACT §7.8: upstream keeps the scale of the network's own alpha.
    network, _, _ = trained_network(tmp_path, dim=4, alpha=4.0)
    path = tmp_path / "alpha4.safetensors"
    network.save_weights(str(path), None, {})
    text_encoder, unet = frozen(build_tiny_sd(seed=0))
    other = make_network(text_encoder, unet, dim=4, alpha=1.0)
    other.load_weights(str(path))
    assert {m.scale for m in other.all_loras} == {1.0}


def test_from_weights_honours_loraplus_and_dropouts(tmp_path):
    # CONTRACT §7.9: upstream drops both on the --dim_from_weights path.
    network, _, _ = trained_network(tmp_path)
    path = tmp_path / "plus.safetensors"
    network.save_weights(str(path), None, {})
    text_encoder, unet = frozen(build_tiny_sd(seed=0))
    rebuilt, _ = lora.create_network_from_weights(
        1, str(path), None, text_encoder, unet, loraplus_lr_ratio="16", rank_dropout="0.1", module_dropout="0.2", **BLOCK_ARGS
    )
    rebuilt.apply_to(text_encoder, unet)
    params, descriptions = rebuilt.prepare_optimizer_params(1e-4, 1e-4, 1e-4, with_descriptions=True)
    assert descriptions[:2] == ["textencoder", "textencoder plus"]
    assert params[1]["lr"] == pytest.approx(16e-4)
    assert {m.rank_dropout for m in rebuilt.all_loras} == {0.1} and {m.module_dropout for m in rebuilt.all_loras} == {0.2}


def test_restore_undoes_apply_to():
    text_encoder, unet = frozen(build_tiny_sd(seed=0))
    data = batch(text_encoder)
    network = make_network(text_encoder, unet)
    with torch.no_grad():
        for module in network.all_loras:
            module.lora_up.weight.fill_(0.1)
        changed = predict(text_encoder, unet, data)
        network.restore()
        restored = predict(text_encoder, unet, data)
        network.apply_to(text_encoder, unet)
        again = predict(text_encoder, unet, data)
    text_encoder0, unet0 = build_tiny_sd(seed=0)
    with torch.no_grad():
        assert torch.equal(restored, predict(text_encoder0, unet0, data))
    assert torch.equal(changed, again)


def test_max_norm_regularization_from_first_principles():
    text_encoder, unet = frozen(build_tiny_sd(seed=0))
    network = make_network(text_encoder, unet)
    with torch.no_grad():
        for module in network.all_loras:
            module.lora_up.weight.normal_()
    norms_before = [m.delta_weight(1.0).norm().item() for m in network.all_loras]
    bound = max_norm_rtol(network.all_loras, torch.float32)
    keys_scaled, mean_norm, max_norm = network.apply_max_norm_regularization(1.0, "cpu")
    norms_after = [delta_norm64(m) for m in network.all_loras]
    assert keys_scaled == sum(n > 1.0 for n in norms_before)
    assert max(norms_after) == pytest.approx(1.0, rel=bound)
    # The reported norm is norm · (max / norm) in float32: two roundings.
    assert max_norm == pytest.approx(1.0, rel=fp_tolerance(torch.float32, 2))
    assert mean_norm == pytest.approx(sum(norms_after) / len(norms_after), rel=bound)


def test_block_table_is_logged_once_at_creation(caplog):
    text_encoder, unet = frozen(build_tiny_sd(seed=0))
    with caplog.at_level(logging.INFO, logger="lr_weights"):
        lora.create_network(1.0, 4, 1, None, text_encoder, unet, **BLOCK_ARGS)
    tables = [r for r in caplog.records if "IN01" in r.getMessage()]
    assert len(tables) == 1
    text = tables[0].getMessage()
    for name in ("TE", "IN00", "IN11", "M00", "OUT00", "OUT11"):
        assert f"\n{name} " in text
    assert "no modules" in text and "0.3923" in text


def test_table_is_visible_when_the_host_configures_no_logging():
    """The GUI-era trainer configures no handlers; INFO records must still reach the console."""
    code = (
        "from lr_weights import lora; from lr_weights.models.tiny import build_tiny_sd; "
        "te, unet = build_tiny_sd(); lora.create_network(1.0, 4, 1, None, te, unet, down_lr_weight='sine')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "IN01" in result.stderr and "OUT11" in result.stderr


def test_unknown_block_trains_at_weight_one_with_base_dim(caplog):
    """CONTRACT §7.7: upstream gives such a layer block 24's settings."""
    text_encoder, unet = frozen(build_tiny_sd(seed=0))
    unet.extra_attention = type(unet.mid_block.attentions[0])(64, 32, 2, 8)  # a Transformer2DModel outside the blocks
    with caplog.at_level(logging.WARNING):
        network = lora.create_network(1.0, 4, 1, None, text_encoder, unet, block_dims=",".join(["2"] * 25), up_lr_weight="0.5")
    extra = [m for m in network.unet_loras if m.lora_name.startswith("lora_unet_extra_attention")]
    assert extra and {m.lora_dim for m in extra} == {4}
    assert "extra_attention" in caplog.text
    params, descriptions = network.prepare_optimizer_params(1e-4, 1e-4, 1e-4, with_descriptions=True)
    assert params[descriptions.index("unet_block-1")]["lr"] == 1e-4


def test_saved_metadata_carries_the_block_table_and_hashes(tmp_path):
    network, _, _ = trained_network(tmp_path, **BLOCK_ARGS)
    path = tmp_path / "meta.safetensors"
    network.save_weights(str(path), torch.float16, {"ss_network_dim": "4"})
    metadata = read_metadata(path)
    assert metadata["ss_network_dim"] == "4"
    assert len(metadata["sshs_model_hash"]) == 64 and len(metadata["sshs_legacy_hash"]) == 8
    assert '"name":"IN01"' in metadata["lr_weights_blocks"]
