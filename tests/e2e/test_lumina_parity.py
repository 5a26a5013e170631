"""Oracle test: lr_weights.lumina vs upstream networks.lora_lumina inside the real lumina_train_network.py.

Skipped unless SD_SCRIPTS_DIR points at a kohya-ss/sd-scripts checkout with lumina_train_network.py.
The trainer runs under SD_SCRIPTS_PYTHON (default: this interpreter), which needs sd-scripts'
requirements and tokenizers. lumina_harness.py builds the tiny offline Lumina 2 (26 layers,
2 context_refiner + 2 noise_refiner blocks, hidden 32), Gemma2, its tokenizer and the AE;
run_lumina_sd_scripts.py points sd-scripts' fixed model configs at them. Three fp32 CPU steps,
AdamW, seed 42, Gemma2's LoRA trained too; then the saved LoRA files are compared tensor by tensor.

Upstream lora_lumina has no per-block LR (no `network_reg_lrs`, unlike lora_flux), so block weights
are checked where upstream can say the same thing:
* a uniform weight w over the blocks a `train_blocks` value selects == upstream with
  `--unet_lr unet_lr * w` and the same `train_blocks` (final_layer, which no weight addresses, is
  left out by both `transformer` and `refiners`); non-uniform weights have no upstream spelling;
* the threshold (blocks with w <= block_lr_zero_threshold get no modules) == upstream's
  `refiner_dim=0` (no refiner modules) or a narrower `train_blocks`. Upstream's
  `train_block_indices` is broken (never passed on; docs/lumina.md), so single main layers cannot
  be dropped upstream and are not compared here.

Tolerance: 1e-5, as for FLUX (LRW_E2E_TOL), between rounding and a defect. The same modules, order,
init, random draws and LRs give the same math; ours applies a LoRA's scale to the rank-r tensor (or
as the addmm's alpha), upstream to the full-width output (`lora_up(h) * multiplier * scale`). With
a power-of-two scale (alpha 1 / dim 4 or 2 or 8, LoRA+ ratio 4, dropout p = 0.5) that is exact and
the tensors are bit-identical (0.0 measured); with scale 1/3, 1/6 (embedder_dims, mlp_dim) or
1/(1 - 0.1) (rank dropout) it is one float32 rounding (2**-24 relative) per product, which the
26-layer backward spreads into the gradients and AdamW's normalised steps (at most ~lr = 1e-3
each) carry into the weights: measured <= 2e-6 over 3 steps. A defect shows at the size of a
step: a wrong LR, module or group moves weights by ~lr * |1 - w| (the guard below measures 2e-3
for w = 0.3), a different random draw by ~lr.

Optional environment:
  LRW_E2E_WORKDIR           reuse this folder for models/outputs (default: pytest tmp)
  LRW_E2E_LUMINA_CANDIDATE  network module under test (default: lr_weights.lumina)
  LRW_E2E_TOL               max abs diff allowed (default: 1e-5)
  LRW_E2E_THREADS           OMP/MKL threads per trainer process (default: 1)
  LRW_E2E_REPORT            append one JSON line of figures per comparison to this file
  PYTHONPATH                a checkout here wins over this repository for the candidate
"""

from __future__ import annotations

import os

import pytest

from . import lumina_harness as harness

SD_DIR = harness.sd_harness.sd_scripts_dir()
if SD_DIR is None or not (SD_DIR / "lumina_train_network.py").is_file():
    pytest.skip("SD_SCRIPTS_DIR not set (or not an sd-scripts checkout with lumina_train_network.py)", allow_module_level=True)

UPSTREAM = "networks.lora_lumina"
CANDIDATE = os.environ.get("LRW_E2E_LUMINA_CANDIDATE", "lr_weights.lumina")
TOL = float(os.environ.get("LRW_E2E_TOL", "1e-5"))
UNET_LR = 1e-3  # the harness's --learning_rate; Gemma2's LoRA always trains at it
LAYER_W = 0.3
REFINER_W = 0.7

# name: (candidate network_args, upstream network_args or None for "the same", upstream --unet_lr
#        [, extra trainer args for both])
CASES = {
    # (1) plain LoRA: Gemma2 + refiners + layers + final_layer
    "plain": ([], None, UNET_LR),
    # (2) a uniform block weight == upstream's unet_lr * w over the same blocks
    "uniform_layers": (["train_blocks=transformer", f"layer_lr_weight={LAYER_W}"], ["train_blocks=transformer"], UNET_LR * LAYER_W),
    "uniform_refiners": (
        ["train_blocks=refiners", "refiner_lr_weight=" + ",".join([str(REFINER_W)] * 4)],
        ["train_blocks=refiners"],
        UNET_LR * REFINER_W,
    ),
    "uniform_layers_loraplus": (
        ["train_blocks=transformer", "layer_lr_weight=zeros+.5", "loraplus_unet_lr_ratio=4"],
        ["train_blocks=transformer", "loraplus_unet_lr_ratio=4"],
        UNET_LR * 0.5,
    ),
    # (3) threshold: zero-weight (or <= threshold) blocks get no modules
    "zero_refiners": (["refiner_lr_weight=0"], ["refiner_dim=0"], UNET_LR),
    "threshold_context_refiner": (
        ["train_blocks=refiners", "refiner_lr_weight=0.2,0.2,1,1", "block_lr_zero_threshold=0.5"],
        ["train_blocks=noise_refiner"],
        UNET_LR,
    ),
    # (4) upstream args the candidate must keep: per-component and embedder dims (first match wins)
    "component_dims": (["attn_dim=2", "mlp_dim=6", "mod_dim=0", "refiner_dim=8", "embedder_dims=4,2,3"], None, UNET_LR),
    # random forward paths must draw the same random numbers in the same order
    "dropouts": (["rank_dropout=0.1", "module_dropout=0.1"], None, UNET_LR, ["--network_dropout", "0.1"]),
    "dropouts_power_of_two_scale": (["rank_dropout=0.5", "module_dropout=0.1"], None, UNET_LR, ["--network_dropout", "0.5"]),
    # the DiT alone, fed Gemma2 outputs the trainer cached before training (Gemma2 is not called in the steps)
    "unet_only_cached_te": (
        [f"layer_lr_weight={LAYER_W}", "train_blocks=transformer"],
        ["train_blocks=transformer"],
        UNET_LR * LAYER_W,
        ["--network_train_unet_only", "--cache_text_encoder_outputs"],
    ),
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return harness.LuminaWorkspace(harness.sd_harness.workdir(tmp_path_factory, "lumina_e2e"), SD_DIR)


@pytest.fixture(scope="module")
def candidate_available():
    """The candidate must be importable by the trainer's interpreter with the trainer's path."""
    return harness.sd_harness.candidate_origin_or_skip(CANDIDATE, SD_DIR)


def _train(workspace, module, args, name, unet_lr=UNET_LR, extra_args=()):
    return workspace.train(module, args, out_name=name, unet_lr=unet_lr, extra_args=extra_args)


def test_upstream_is_deterministic(workspace):
    """Baseline: two upstream runs with the same seed give bit-identical tensors, every block trained."""
    a = _train(workspace, UPSTREAM, [], "lumina_det_a")
    b = _train(workspace, UPSTREAM, [], "lumina_det_b")
    res, detail = harness.sd_harness.assert_same_files(workspace, a, b, "lumina upstream vs upstream")
    assert res["max_abs_diff"] == 0.0, detail
    blocks = ["TE", "C0", "C1", "N0", "N1", "OUT"] + [f"L{i:02d}" for i in range(harness.NUM_LAYERS)]
    assert sorted(res["blocks_in_a"]) == sorted(blocks), res["blocks_in_a"]
    assert res["untrained_blocks_in_a"] == [], res["untrained_blocks_in_a"]


def test_upstream_lr_emulation_changes_training(workspace):
    """Guard: upstream's unet_lr * w really changes every layer's tensors (else the uniform cases prove nothing)."""
    plain = _train(workspace, UPSTREAM, ["train_blocks=transformer"], "uniform_layers__upstream_unweighted")
    weighted = _train(workspace, UPSTREAM, ["train_blocks=transformer"], "uniform_layers__upstream", UNET_LR * LAYER_W)
    res, _ = harness.sd_harness.assert_same_files(workspace, plain, weighted, "lumina upstream unet_lr vs unet_lr * w")
    by_block = res["max_abs_diff_by_block"]
    # AdamW's first step moves every weight with a gradient by lr (m / sqrt(v) = +-1), so lora_up
    # differs by ~1e-3 - 3e-4 = 7e-4 after one step; weight decay alone moves weights by ~1e-6.
    assert all(by_block[f"L{i:02d}"] > 10 * TOL for i in range(harness.NUM_LAYERS)), by_block


@pytest.mark.parametrize("case", list(CASES))
def test_parity_with_upstream(workspace, candidate_available, case):
    candidate_args, upstream_args, upstream_unet_lr, *extra = CASES[case]
    upstream_args = candidate_args if upstream_args is None else upstream_args
    extra_args = extra[0] if extra else ()
    ref = _train(workspace, UPSTREAM, upstream_args, f"{case}__upstream", upstream_unet_lr, extra_args)
    got = _train(workspace, CANDIDATE, candidate_args, f"{case}__candidate", extra_args=extra_args)
    label = f"lumina {case}: {UPSTREAM} vs {CANDIDATE} ({candidate_available})"
    res, detail = harness.sd_harness.assert_same_files(workspace, ref, got, label)
    assert res["untrained_blocks_in_a"] == [], f"{case}: upstream left blocks untrained {res['untrained_blocks_in_a']}"
    print(f"{case}: max abs diff {res['max_abs_diff']:.3g} over {res['n_keys_a']} tensors, blocks {res['blocks_in_a']}")
    assert res["max_abs_diff"] <= TOL, f"{case}: max abs diff {res['max_abs_diff']:.3g} > {TOL}\n{detail}"
