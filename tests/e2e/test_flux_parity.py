"""Oracle test: lr_weights.flux vs upstream networks.lora_flux inside the real flux_train_network.py.

Skipped unless SD_SCRIPTS_DIR points at a kohya-ss/sd-scripts checkout with flux_train_network.py.
The trainer runs under SD_SCRIPTS_PYTHON (default: this interpreter), which needs sd-scripts'
requirements plus open_clip_torch (CLIP BPE vocabulary) and tokenizers. flux_harness.py builds
the tiny offline FLUX.1-dev (19 double + 38 single blocks, hidden 32), CLIP-L, T5 and AE;
run_flux_sd_scripts.py points sd-scripts' fixed model configs at them. Three fp32 CPU steps,
seed 42, then the saved LoRA files are compared tensor by tensor.

Block weights have no upstream spelling, so upstream gets the equivalent: one `network_reg_lrs`
regex per block with LR = unet_lr * w, and for a threshold the kept blocks as
`train_double_block_indices` / `train_single_block_indices`.

Optional environment:
  LRW_E2E_WORKDIR         reuse this folder for models/outputs (default: pytest tmp)
  LRW_E2E_FLUX_CANDIDATE  network module under test (default: lr_weights.flux)
  LRW_E2E_TOL             max abs diff allowed (default: 1e-5)
  LRW_E2E_THREADS         OMP/MKL threads per trainer process (default: 1)
  PYTHONPATH              a checkout here wins over this repository for the candidate
"""

from __future__ import annotations

import os

import pytest

from . import flux_harness as harness

SD_DIR = harness.sd_scripts_dir()
if SD_DIR is None or not (SD_DIR / "flux_train_network.py").is_file():
    pytest.skip("SD_SCRIPTS_DIR not set (or not an sd-scripts checkout with flux_train_network.py)", allow_module_level=True)

UPSTREAM = "networks.lora_flux"
CANDIDATE = os.environ.get("LRW_E2E_FLUX_CANDIDATE", "lr_weights.flux")
TOL = float(os.environ.get("LRW_E2E_TOL", "1e-5"))
UNET_LR = 1e-3  # the harness passes --learning_rate and --unet_lr 1e-3 (text encoders: default_lr, the same)

SINE25 = harness.preset_weights("sine+.25", harness.NUM_DOUBLE)
COSINE25 = harness.preset_weights("cosine+.25", harness.NUM_SINGLE)
SINE = harness.preset_weights("sine", harness.NUM_DOUBLE)
COSINE = harness.preset_weights("cosine", harness.NUM_SINGLE)
LINEAR = harness.preset_weights("linear", harness.NUM_DOUBLE)
REVLIN5 = harness.preset_weights("reverse_linear+.5", harness.NUM_SINGLE)

DOUBLE_DIMS = [(2, 4, 8)[i % 3] for i in range(harness.NUM_DOUBLE)]
SINGLE_DIMS = [(8, 2, 4, 6)[i % 4] for i in range(harness.NUM_SINGLE)]
# LBW FLUX vector: CLIP, T5, IN, D00-D18, S00-S37, OUT
LBW = [0.5, 1.0, 0.75] + [0.5 + 0.025 * i for i in range(harness.NUM_DOUBLE)] + [1.0 - 0.02 * j for j in range(harness.NUM_SINGLE)] + [1.0]

# name: (candidate network_args, upstream network_args or None for "the same"[, extra trainer args])
CASES = {
    # (a) plain LoRA: CLIP-L + every double/single block Linear
    "plain": ([], None),
    # (b) upstream args the candidate must keep: T5 training, in_dims, per-component dims, indices
    "t5_in_dims": (["train_t5xxl=True", "in_dims=4,2,0,4,2"], None),
    "dims_indices": (
        ["img_attn_dim=8", "single_mod_dim=0", "train_double_block_indices=0-5,10", "train_single_block_indices=2,7-30"],
        None,
    ),
    # (c) block LR weights (presets over 19 / 38 blocks)
    "block_lr": (
        ["double_lr_weight=sine+.25", "single_lr_weight=cosine+.25"],
        harness.upstream_block_lr_args(SINE25, COSINE25, UNET_LR),
    ),
    # (d) threshold: blocks with w <= 0.3 get no modules at all
    "block_lr_threshold": (
        ["double_lr_weight=sine", "single_lr_weight=cosine", "block_lr_zero_threshold=0.3"],
        harness.upstream_block_lr_args(SINE, COSINE, UNET_LR, threshold=0.3),
    ),
    # (e) block LR with LoRA+ on the unet (lora_up LR = unet_lr * w * ratio)
    "block_lr_loraplus": (
        ["double_lr_weight=linear", "single_lr_weight=reverse_linear+.5", "loraplus_unet_lr_ratio=4"],
        harness.upstream_block_lr_args(LINEAR, REVLIN5, UNET_LR) + ["loraplus_unet_lr_ratio=4"],
    ),
    # (f) per-block dims (upstream: one network_reg_dims regex per block; alpha = network_alpha)
    "block_dims": (
        ["double_block_dims=" + ",".join(map(str, DOUBLE_DIMS)), "single_block_dims=" + ",".join(map(str, SINGLE_DIMS))],
        harness.upstream_block_dims_args(DOUBLE_DIMS, SINGLE_DIMS),
    ),
    # (g) an LBW FLUX vector (61 values) with in_dims: CLIP scales CLIP-L's LR, IN the in_dims modules
    "lbw_in_dims": (
        ["in_dims=4,4,4,4,4", "lbw_weights=" + ",".join(repr(w) for w in LBW)],
        ["in_dims=4,4,4,4,4"] + harness.upstream_lbw_args(LBW, UNET_LR, UNET_LR),
    ),
    # (h) random forward paths must draw the same random numbers in the same order
    "ggpo": (["ggpo_beta=0.01", "ggpo_sigma=0.03"], None),
    "dropouts": (["rank_dropout=0.1", "module_dropout=0.1"], None, ["--network_dropout", "0.1"]),
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return harness.FluxWorkspace(harness.sd_harness.workdir(tmp_path_factory, "flux_e2e"), SD_DIR)


@pytest.fixture(scope="module")
def candidate_available():
    """The candidate must be importable by the trainer's interpreter with the trainer's path."""
    origin, stderr = harness.sd_harness.candidate_origin(CANDIDATE, SD_DIR, harness._env(SD_DIR))
    if not origin:
        pytest.skip(f"{CANDIDATE} is not importable by {harness.sd_harness.sd_python()} ({stderr[-300:]})")
    return origin


def test_upstream_is_deterministic(workspace):
    """Baseline: two upstream runs with the same seed give bit-identical tensors."""
    a = workspace.train(UPSTREAM, out_name="flux_det_a")
    b = workspace.train(UPSTREAM, out_name="flux_det_b")
    res, detail = harness.assert_same_files(workspace, a, b, "upstream vs upstream")
    assert res["max_abs_diff"] == 0.0, detail


def test_upstream_block_lr_emulation_changes_training(workspace):
    """Guard: the per-block regex LRs really reach upstream's optimizer (else the block cases prove nothing)."""
    plain = workspace.train(UPSTREAM, out_name="flux_det_a")
    weighted = workspace.train(UPSTREAM, CASES["block_lr"][1], out_name="block_lr__upstream")
    res, _ = harness.assert_same_files(workspace, plain, weighted, "upstream plain vs upstream block LR")
    by_block = res["max_abs_diff_by_block"]
    # Every block's LR changed (sine+.25 / cosine+.25 are never exactly 1.0 on these grids). CLIP-L
    # differs too from step 2 on: its gradient flows back through the differently trained blocks.
    assert all(by_block[f"D{i:02d}"] > 0.0 for i in range(harness.NUM_DOUBLE)), by_block
    assert all(by_block[f"S{i:02d}"] > 0.0 for i in range(harness.NUM_SINGLE)), by_block


@pytest.mark.parametrize("case", list(CASES))
def test_parity_with_upstream(workspace, candidate_available, case):
    candidate_args, upstream_args, *extra = CASES[case]
    upstream_args = candidate_args if upstream_args is None else upstream_args
    extra_args = extra[0] if extra else ()
    ref = workspace.train(UPSTREAM, upstream_args, out_name=f"{case}__upstream", extra_args=extra_args)
    got = workspace.train(CANDIDATE, candidate_args, out_name=f"{case}__candidate", extra_args=extra_args)
    res, detail = harness.assert_same_files(workspace, ref, got, f"{case}: {UPSTREAM} vs {CANDIDATE} ({candidate_available})")
    print(f"{case}: max abs diff {res['max_abs_diff']:.3g} over {res['n_keys_a']} tensors ({candidate_available})")
    assert res["max_abs_diff"] <= TOL, f"{case}: max abs diff {res['max_abs_diff']:.3g} > {TOL}\n{detail}"
