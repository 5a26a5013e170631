"""lr_weights.lycoris against lycoris-lora's own `lycoris.kohya`, run in the same process.

With no block args both must build the same modules from the same RNG stream, so the oracle is
upstream itself: same seed -> the same tensors, keys and metadata, exactly (torch.equal). With block
args the expected LRs and module sets follow from the block map (lr_weights.archs.blocks) and the
weights parsed by lr_weights' own parser, which test_weights.py checks against sd-scripts' figures.
"""

import importlib.util
import json
import logging
import textwrap

import pytest
import torch

lycoris_kohya = pytest.importorskip("lycoris.kohya", reason="lycoris-lora is an optional extra (pip install lycoris-lora)")

from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from lr_weights import lycoris as ours  # noqa: E402
from lr_weights.archs.blocks import SD, SDXL, block_index  # noqa: E402
from lr_weights.errors import NetworkArgError  # noqa: E402
from lr_weights.models.skeleton import build_from_skeleton  # noqa: E402
from lr_weights.models.tiny import build_tiny_sd  # noqa: E402
from lr_weights.args.weights import resolve_block_lr_weights  # noqa: E402

from tests.conftest import UPSTREAM  # noqa: E402
from tests.tolerances import assert_within, float64, float64_agreement, fp_tolerance, on_grid  # noqa: E402

ALGOS = [
    ("lokr", {"factor": "4"}),
    ("lokr", {"factor": "8", "decompose_both": "True", "use_tucker": "True", "conv_dim": "2", "conv_alpha": "1"}),
    ("loha", {}),
    ("locon", {"conv_dim": "2", "conv_alpha": "1"}),
    ("ia3", {}),
    ("full", {}),
    ("dylora", {"block_size": "2"}),
    ("glora", {}),
    ("diag-oft", {}),
    ("boft", {}),
    ("locon", {"dora_wd": "True"}),
    ("lokr", {"dora_wd": "True", "factor": "4"}),
]
# SD1 presets upstream can build: "full", "full-lin" and "unet-only" crash it on every SD1/SD2 model
# (TimestepEmbedding and its names both match: duplicated lora name).
SD1_PRESETS = ["attn-mlp", "unet-convblock-only"]
BLOCK_ARGS = {"down_lr_weight": "sine+.25", "mid_lr_weight": "1", "up_lr_weight": "cosine+.25"}


def build(module, seed=1, model_seed=0, dim=4, alpha=2.0, apply=True, **kwargs):
    text_encoder, unet = build_tiny_sd(seed=model_seed)
    torch.manual_seed(seed)
    network = module.create_network(1.0, dim, alpha, None, text_encoder, unet, **kwargs)
    if apply:
        network.apply_to(text_encoder, unet, True, True)
    return network, text_encoder, unet


def saved(network, path, metadata=None):
    network.save_weights(str(path), None, dict(metadata or {}))
    with safe_open(str(path), "pt") as handle:
        return load_file(str(path)), handle.metadata()


def shrunk_sdxl():
    """sd-scripts' SDXL module tree (names, classes, kernel sizes) with every width / 32, on the CPU."""

    def load(name):
        skeleton = json.loads((UPSTREAM / "skeletons" / name).read_text(encoding="utf-8"))
        for entry in skeleton["modules"]:
            for key in ("in_features", "out_features", "in_channels", "out_channels"):
                if key in entry:
                    entry[key] = max(1, entry[key] // 32)
        return build_from_skeleton(skeleton, "cpu")

    return [load("sdxl_te1.json"), load("sdxl_te2.json")], load("sdxl_unet.json")


# ---- no block args: exactly lycoris.kohya ---------------------------------------------------------


@pytest.mark.parametrize("preset", SD1_PRESETS)
@pytest.mark.parametrize("algo,extra", ALGOS, ids=[f"{a}-{'-'.join(e)}" for a, e in ALGOS])
def test_same_tensors_keys_and_metadata_as_lycoris_kohya(tmp_path, algo, extra, preset):
    upstream, _, _ = build(lycoris_kohya, algo=algo, preset=preset, **extra)
    network, _, _ = build(ours, algo=algo, preset=preset, **extra)
    assert [m.lora_name for m in network.text_encoder_loras] == [m.lora_name for m in upstream.text_encoder_loras]
    assert [m.lora_name for m in network.unet_loras] == [m.lora_name for m in upstream.unet_loras]
    assert [type(m) for m in network.all_loras] == [type(m) for m in upstream.text_encoder_loras + upstream.unet_loras]

    theirs, their_meta = saved(upstream, tmp_path / "theirs.safetensors", {"ss_seed": "1"})
    mine, my_meta = saved(network, tmp_path / "mine.safetensors", {"ss_seed": "1"})
    assert list(mine) == list(theirs)
    assert all(torch.equal(mine[k], theirs[k]) and mine[k].dtype == theirs[k].dtype for k in theirs)
    assert {k: my_meta[k] for k in their_meta} == their_meta  # including lycoris' sshs_model_hash
    assert set(my_meta) - set(their_meta) == {"lr_weights_version", "lr_weights_blocks"}


def test_optimizer_groups_equal_lycoris_kohya_without_block_args():
    upstream, _, _ = build(lycoris_kohya, algo="locon", preset="attn-mlp", loraplus_lr_ratio="4")
    network, _, _ = build(ours, algo="locon", preset="attn-mlp", loraplus_lr_ratio="4")
    their_groups, their_names = upstream.prepare_optimizer_params(5e-5, 1e-4, 1e-4)
    my_groups, my_names = network.prepare_optimizer_params(5e-5, 1e-4, 1e-4)
    assert my_names == their_names == ["textencoder", "textencoder plus", "unet", "unet plus"]
    assert [g["lr"] for g in my_groups] == [g["lr"] for g in their_groups]
    assert [[tuple(p.shape) for p in g["params"]] for g in my_groups] == [[tuple(p.shape) for p in g["params"]] for g in their_groups]


def test_sdxl_default_preset_same_as_lycoris_kohya(tmp_path):
    tensors = []
    for module in (lycoris_kohya, ours):
        text_encoders, unet = shrunk_sdxl()
        torch.manual_seed(3)
        network = module.create_network(1.0, 4, 1.0, None, text_encoders, unet, algo="lokr", factor="4")
        network.apply_to(text_encoders, unet, True, True)
        tensors.append(saved(network, tmp_path / f"{module.__name__}.safetensors")[0])
    theirs, mine = tensors
    assert list(mine) == list(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert any(k.startswith("lora_te1_") for k in mine) and any(k.startswith("lora_te2_") for k in mine)


# ---- where lycoris.kohya breaks ----------------------------------------------------------------


def test_default_preset_on_sd1_does_not_crash_and_adapts_each_layer_once(caplog):
    with pytest.raises(AssertionError, match="duplicated lora name: lora_unet_time_embedding_linear_1"):
        build(lycoris_kohya, algo="lokr", apply=False)
    with caplog.at_level(logging.WARNING, logger="lr_weights"):
        network, _, _ = build(ours, algo="lokr")
    names = [m.lora_name for m in network.unet_loras]
    assert len(names) == len(set(names))
    for name in ("lora_unet_conv_in", "lora_unet_conv_out", "lora_unet_time_embedding_linear_1", "lora_unet_time_embedding_linear_2"):
        assert names.count(name) == 1
    assert "matches 2 layers twice" in caplog.text


def test_layers_in_no_block_train_at_weight_one_with_the_warning_and_a_table_row(caplog):
    with caplog.at_level(logging.INFO, logger="lr_weights"):
        network, _, _ = build(ours, algo="loha", **BLOCK_ARGS)
    assert "4 U-Net layers are in no known SD block; they train with weight 1.0" in caplog.text
    groups, names = network.prepare_optimizer_params(None, 1e-4, 1e-4)
    outside = {id(p) for name in ("lora_unet_conv_in", "lora_unet_conv_out", "lora_unet_time_embedding_linear_1") for p in getattr(network, name).parameters()}
    lrs = {g["lr"] for g in groups for p in g["params"] if id(p) in outside}
    assert lrs == {1e-4}
    rows = network.block_table()
    unknown = [r for r in rows if r.name == "unknown"]
    assert len(unknown) == 1 and unknown[0].modules == 4 and unknown[0].lr_weight == 1.0


def test_two_networks_in_one_process_do_not_leak_presets():
    before = {k: getattr(lycoris_kohya.LycorisNetworkKohya, k) for k in ("UNET_TARGET_REPLACE_MODULE", "UNET_TARGET_REPLACE_NAME", "ENABLE_CONV")}
    first, _, _ = build(ours, algo="lokr")
    build(ours, algo="lokr", preset="attn-only")
    third, _, _ = build(ours, algo="lokr")
    after = {k: getattr(lycoris_kohya.LycorisNetworkKohya, k) for k in before}
    assert after == before
    assert [m.lora_name for m in third.all_loras] == [m.lora_name for m in first.all_loras]
    # Upstream leaks: after an attn-only network, its next default network is attn-only too.
    probe = lycoris_kohya.LycorisNetworkKohya.__dict__.copy()
    try:
        build(lycoris_kohya, algo="lokr", preset="attn-only", apply=False)
        leaked, _, _ = build(lycoris_kohya, algo="lokr", preset="attn-mlp", apply=False)
        assert len(leaked.unet_loras) < len(first.unet_loras)
    finally:
        for key in before:
            setattr(lycoris_kohya.LycorisNetworkKohya, key, probe[key])
        for key in ("TEXT_ENCODER_TARGET_REPLACE_MODULE", "TEXT_ENCODER_TARGET_REPLACE_NAME", "MODULE_ALGO_MAP", "NAME_ALGO_MAP", "USE_FNMATCH", "TARGET_EXCLUDE_NAME"):
            if key in probe:
                setattr(lycoris_kohya.LycorisNetworkKohya, key, probe[key])


# ---- block args -------------------------------------------------------------------------------


def module_block(network, module):
    return block_index(module.lora_name, SD) if module.lora_name.startswith("lora_unet") else -1


@pytest.mark.parametrize("algo", ["lokr", "loha", "locon", "ia3", "full", "diag-oft", "boft", "glora", "dylora"])
def test_every_parameter_trains_at_unet_lr_times_its_block_weight(algo):
    args = {"down_lr_weight": "0,0,0.5,1,1,0,1,1,0.25,1,1,1", "mid_lr_weight": "2", "up_lr_weight": "cosine", "block_lr_zero_threshold": "0.3"}
    network, _, _ = build(ours, algo=algo, preset="attn-mlp" if algo == "glora" else "full", **args)
    weights = resolve_block_lr_weights(SD, args["down_lr_weight"], args["mid_lr_weight"], args["up_lr_weight"], args["block_lr_zero_threshold"])
    groups, descriptions = network.prepare_optimizer_params(5e-5, 1e-4, 1e-4)
    owner = {id(p): m for m in network.all_loras for p in m.parameters()}
    assert sum(len(g["params"]) for g in groups) == len(owner)
    for group, description in zip(groups, descriptions):
        for param in group["params"]:
            module = owner[id(param)]
            block = module_block(network, module)
            if not module.lora_name.startswith("lora_unet"):
                assert group["lr"] == 5e-5 and description == "textencoder"
            elif block < 0:
                assert group["lr"] == 1e-4
            else:
                # Python floats: lr · weight rounded once on each side
                assert group["lr"] == pytest.approx(1e-4 * weights[block], rel=fp_tolerance(torch.float64, 1))
                assert description == f"unet_block{block}"
    pruned = [i for i, w in enumerate(weights) if w == 0]
    assert pruned  # blocks at or under the threshold: IN00..IN02 (0, 0.25 <= 0.3 ...)
    assert not [m for m in network.unet_loras if module_block(network, m) in pruned]
    assert not any(block_index(k, SD) in pruned for k in network.state_dict() if k.startswith("lora_unet"))


def test_pruned_blocks_are_never_built():
    full, _, _ = build(ours, algo="lokr", apply=False)
    pruned, _, _ = build(ours, algo="lokr", apply=False, down_lr_weight="0", up_lr_weight="1", mid_lr_weight="1")
    in_down = [m.lora_name for m in full.unet_loras if "down_blocks" in m.lora_name]
    assert in_down and not [m for m in pruned.unet_loras if "down_blocks" in m.lora_name]
    assert len(pruned.unet_loras) == len(full.unet_loras) - len(in_down)


def test_lbw_weights_base_zero_drops_the_text_encoder():
    network, _, _ = build(ours, algo="loha", lbw_weights="0,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1")
    assert network.text_encoder_loras == [] and network.unet_loras


@pytest.mark.parametrize("algo", ["lokr", "loha", "locon", "dylora"])
def test_block_dims_and_alphas_set_each_modules_rank(algo):
    dims = ",".join(str(2 + (i % 3) * 2) for i in range(25))
    alphas = ",".join(str(1 + i % 2) for i in range(25))
    extra = {"block_size": "2"} if algo == "dylora" else {}
    network, _, _ = build(ours, algo=algo, preset="attn-mlp", block_dims=dims, block_alphas=alphas, **extra)
    expected_dims = [int(d) for d in dims.split(",")]
    expected_alphas = [float(a) for a in alphas.split(",")]
    for module in network.unet_loras:
        block = module_block(network, module)
        if block < 0:  # time_embedding: in no block, so the base dim (attn-mlp matches TimestepEmbedding)
            assert module.lora_dim == 4
            continue
        assert module.lora_dim == expected_dims[block]
        if algo != "lokr":  # LoKr stores alpha scaled by its own rank factor
            assert float(module.alpha) == expected_alphas[block]
        assert module.scale == pytest.approx(expected_alphas[block] / expected_dims[block]) if algo in ("locon", "loha") else True


def test_a_block_dim_of_zero_builds_nothing_in_that_block():
    dims = ",".join("0" if i == 12 else "4" for i in range(25))
    network, _, _ = build(ours, algo="lokr", preset="attn-mlp", block_dims=dims)
    assert not [m for m in network.unet_loras if "mid_block" in m.lora_name]
    assert [r.status for r in network.block_table() if r.name == "M00"] == ["dim 0: not trained"]


@pytest.mark.parametrize("algo,key", [("ia3", "block_dims"), ("full", "block_alphas"), ("diag-oft", "block_alphas"), ("boft", "conv_block_alphas")])
def test_args_an_algorithm_cannot_honour_are_errors(algo, key):
    with pytest.raises(NetworkArgError, match=f"no {key} with algo={algo}"):
        build(ours, algo=algo, apply=False, **{key: ",".join(["1"] * 25), "conv_dim": "2"})


def test_loraplus_on_block_groups():
    network, _, _ = build(ours, algo="locon", preset="attn-mlp", loraplus_unet_lr_ratio="8", **BLOCK_ARGS)
    groups, names = network.prepare_optimizer_params(None, 1e-4, 1e-4)
    plus = [(n, g) for n, g in zip(names, groups) if n.endswith(" plus")]
    assert plus and all(n.startswith("unet_block") for n, _ in plus)
    by_name = dict(zip(names, groups))
    for name, group in plus:
        assert group["lr"] == pytest.approx(8 * by_name[name[: -len(" plus")]]["lr"])


def test_sdxl_block_weights_9_3_9():
    text_encoders, unet = shrunk_sdxl()
    torch.manual_seed(0)
    network = ours.create_network(1.0, 4, 1.0, None, text_encoders, unet, algo="lokr", factor="4", down_lr_weight="0,1,1,1,1,1,1,1,0.5", mid_lr_weight="1,0,1", up_lr_weight="1,1,1,1,1,1,1,1,2")
    network.apply_to(text_encoders, unet, True, True)
    weights = resolve_block_lr_weights(SDXL, "0,1,1,1,1,1,1,1,0.5", "1,0,1", "1,1,1,1,1,1,1,1,2", None)
    blocks = {block_index(m.lora_name, SDXL) for m in network.unet_loras}
    assert 11 not in blocks and 1 not in blocks and -1 not in blocks
    groups, names = network.prepare_optimizer_params(None, 1e-4, 1e-4)
    for name, group in zip(names, groups):
        if name.startswith("unet_block"):
            assert group["lr"] == pytest.approx(1e-4 * weights[int(name[len("unet_block"):])])


# ---- errors ------------------------------------------------------------------------------------


def test_unknown_algo_lists_the_valid_ones():
    with pytest.raises(NetworkArgError, match=r"algo='lokrr'.*loha.*lokr.*did you mean lokr"):
        build(ours, algo="lokrr", apply=False)


def test_unknown_arg_is_an_error_with_a_suggestion():
    with pytest.raises(NetworkArgError, match="facter.*did you mean factor"):
        build(ours, algo="lokr", facter="8", apply=False)
    with pytest.raises(NetworkArgError, match="down_lr_weigth.*did you mean down_lr_weight"):
        build(ours, algo="lokr", down_lr_weigth="1", apply=False)


def test_unknown_preset_is_an_error():
    with pytest.raises(NetworkArgError, match="preset='fulll'.*attn-mlp"):
        build(ours, algo="lokr", preset="fulll", apply=False)


def test_lora_fa_is_refused():
    with pytest.raises(NetworkArgError, match="no fa with lr_weights.lycoris"):
        build(ours, algo="locon", fa="1", apply=False)


def test_bad_block_lists_use_lr_weights_messages():
    with pytest.raises(NetworkArgError, match="block_dims.*exactly 25"):
        build(ours, algo="lokr", block_dims="4,4", apply=False)


# ---- host surface ------------------------------------------------------------------------------


def batch(text_encoder, seed=0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 4, 16, 16, generator=g)
    tokens = torch.randint(0, text_encoder.cfg.vocab, (2, text_encoder.cfg.max_length), generator=g)
    return latents, torch.tensor([10, 700]), tokens


def predict(text_encoder, unet, seed=0):
    latents, timesteps, tokens = batch(text_encoder, seed)
    with torch.no_grad():
        return unet(latents, timesteps, text_encoder(tokens))


def perturb(network, seed=5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in network.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.mark.parametrize("algo", ["lokr", "loha", "locon", "ia3", "full", "diag-oft"])
def test_save_load_gives_the_same_output(tmp_path, algo):
    network, text_encoder, unet = build(ours, algo=algo, **BLOCK_ARGS)
    perturb(network)
    expected = predict(text_encoder, unet)
    path = tmp_path / "a.safetensors"
    network.save_weights(str(path), None, {})
    network.restore()

    other, text_encoder2, unet2 = build(ours, seed=9, algo=algo, **BLOCK_ARGS)
    assert not torch.equal(predict(text_encoder2, unet2), expected)
    other.load_weights(str(path))
    assert torch.equal(predict(text_encoder2, unet2), expected)

    fresh_te, fresh_unet = build_tiny_sd(seed=0)
    from_file, _ = ours.create_network_from_weights(1.0, str(path), None, fresh_te, fresh_unet)
    from_file.apply_to(fresh_te, fresh_unet, True, True)
    assert sorted(from_file.state_dict()) == sorted(load_file(str(path)))
    assert torch.equal(predict(fresh_te, fresh_unet), expected)


def test_load_weights_of_another_algorithm_names_it(tmp_path):
    network, _, _ = build(ours, algo="lokr", preset="attn-mlp")
    path = tmp_path / "loha.safetensors"
    network.save_weights(str(path), None, {})
    other, _, _ = build(ours, algo="loha", preset="attn-mlp")
    with pytest.raises(ValueError, match="none of its .* tensors belongs to this network"):
        other.load_weights(str(path))


def test_multiplier_enable_and_max_norm():
    network, text_encoder, unet = build(ours, algo="loha", preset="attn-mlp")
    perturb(network, seed=2)
    with_adapter = predict(text_encoder, unet)
    network.set_multiplier(0.0)
    plain = predict(text_encoder, unet)
    network.set_multiplier(1.0)
    assert torch.equal(predict(text_encoder, unet), with_adapter)
    network.set_enabled(False)
    assert torch.equal(predict(text_encoder, unet), plain)
    network.set_enabled(True)
    scaled, mean, largest = network.apply_max_norm_regularization(1e-3, "cpu")
    # lycoris-lora reports norm · (max / norm) in float32: 1e-3 rounded, a division, a product.
    assert scaled > 0 and largest == pytest.approx(1e-3, rel=fp_tolerance(torch.float32, 3))


def test_prepare_optimizer_params_with_multiple_te_lrs_on_sdxl():
    text_encoders, unet = shrunk_sdxl()
    network = ours.create_network(1.0, 4, 1.0, None, text_encoders, unet, algo="loha", preset="attn-mlp")
    network.apply_to(text_encoders, unet, True, True)
    groups, names = network.prepare_optimizer_params_with_multiple_te_lrs([2e-5, 1e-5], 1e-4, 1e-4)
    assert names[:2] == ["textencoder 1", "textencoder 2"] and [g["lr"] for g in groups[:2]] == [2e-5, 1e-5]


GUI_ERA_TRAINER = '''
import torch

def train(network, text_encoder_lr, unet_lr, learning_rate):
    trainable_params = network.prepare_optimizer_params(text_encoder_lr, unet_lr, learning_rate)
    return torch.optim.AdamW(trainable_params, lr=learning_rate)
'''


def test_gui_era_host_gets_a_plain_list(tmp_path):
    (tmp_path / "train_network.py").write_text(textwrap.dedent(GUI_ERA_TRAINER))
    spec = importlib.util.spec_from_file_location("gui_era_train_network_lycoris", tmp_path / "train_network.py")
    trainer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trainer)
    network, _, _ = build(ours, algo="lokr", **BLOCK_ARGS)
    optimizer = trainer.train(network, None, 1e-3, 1e-3)
    assert optimizer.param_groups[0]["lr"] == 1e-3
    assert len(optimizer.param_groups) > 2


def test_merge_to_equals_the_patched_forward(tmp_path):
    """merge_to adds ΔW to W in float32 and the U-Net is non-linear, so no float32 bound exists for
    the output: the merge is made exact and both models run in float64 (tests/tolerances.py, as
    test_host_contract's merge test). LoKr factors on coarse grids (w1 2⁻⁴, w2 and its halves 2⁻⁶)
    make ΔW = kron(w1, w2)·scale a multiple of 2⁻¹⁷ (checked below); base weights on a 2⁻²² grid
    with |W + ΔW| < 2 then need at most 23 significant bits, so the float32 merge is exact and the
    two forwards differ only by float64 rounding."""
    from lr_weights.adapters.lycoris_library import delta_weight

    with float64():
        network, text_encoder, unet = build(ours, algo="lokr", preset="attn-mlp")
        perturb(network)
        for model in (text_encoder, unet):
            for layer in model.modules():
                if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
                    on_grid(layer.weight, 22)
        for name, p in network.named_parameters():
            on_grid(p, 4 if "lokr_w1" in name else 6)
        for module in network.all_loras:
            diff, _ = delta_weight(module)
            assert torch.equal(diff, torch.round(diff * 2.0**17) / 2.0**17), module.lora_name
            assert (module.org_module[0].weight + diff).abs().max() < 2, module.lora_name
        expected = predict(text_encoder, unet)
        network.set_multiplier(0.0)
        unadapted = predict(text_encoder, unet)
        network.set_multiplier(1.0)
        path = tmp_path / "m.safetensors"
        network.save_weights(str(path), None, {})
        te2, unet2 = build_tiny_sd(seed=0)
        for model in (te2, unet2):
            for layer in model.modules():
                if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
                    on_grid(layer.weight, 22)
        merged, weights = ours.create_network_from_weights(1.0, str(path), None, te2, unet2, for_inference=True)
        merged.merge_to(te2, unet2, weights, torch.float64, "cpu")
        got = predict(te2, unet2)
    assert got.dtype == torch.float64
    tolerance = float64_agreement(expected.abs().max().item())
    assert (expected - unadapted).abs().max().item() > 1e3 * tolerance  # the LoKr's effect: a wrong merge shows
    assert_within(got, expected, tolerance, "merged against patched")


def test_pt_files_save_and_load(tmp_path):
    network, text_encoder, unet = build(ours, algo="loha", preset="attn-mlp")
    perturb(network)
    expected = predict(text_encoder, unet)
    path = tmp_path / "a.pt"
    network.save_weights(str(path), None, {})
    other, te2, unet2 = build(ours, seed=7, algo="loha", preset="attn-mlp")
    other.load_weights(str(path))
    assert torch.equal(predict(te2, unet2), expected)


def test_missing_library_gives_the_install_hint(monkeypatch):
    import sys

    from lr_weights.adapters.lycoris_library import import_lycoris

    monkeypatch.setitem(sys.modules, "lycoris", None)
    with pytest.raises(ImportError, match=r"pip install lycoris-lora"):  # lr-weights[lycoris] is on no index
        import_lycoris()
