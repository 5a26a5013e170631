"""Oracle test: lr_weights.hunyuan_image vs upstream networks.lora_hunyuan_image inside the real
hunyuan_image_train_network.py.

Skipped unless SD_SCRIPTS_DIR points at a kohya-ss/sd-scripts checkout with
hunyuan_image_train_network.py. The trainer runs under SD_SCRIPTS_PYTHON (default: this
interpreter), which needs sd-scripts' requirements plus tokenizers. hunyuan_image_harness.py builds
the tiny offline HunyuanImage 2.1 (20 double + 40 single blocks, hidden 32), Qwen2.5-VL, byT5 and
VAE; run_hunyuan_image_sd_scripts.py shrinks sd-scripts' literal sizes to them. Three fp32 CPU
AdamW steps, seed 42, text encoder outputs cached, then the saved LoRA files are compared tensor by
tensor.

Block weights have no upstream spelling, so upstream gets the equivalent: one `network_reg_lrs`
regex per block with LR = unet_lr * w, and for a threshold (lora_hunyuan_image has no block
indices) dim 0 for the pruned blocks through `network_reg_dims`.

Tolerance: where both networks do the same float32 operations in the same order the files are
bit-identical (measured 0). split_qkv is not: lr_weights computes the parts in one fused op
(docs/flux.md, Speed), so last-ulp differences in gradients of ~1e-9 are amplified by Adam's
eps-normalised step (measured ~3e-6). The bound 1e-5 is two orders below what any real difference
makes: one AdamW step moves a weight by about the LR (1e-3), so a wrong block LR, a missing module
or a different initialisation shows up at >= 1e-4.

Optional environment:
  LRW_E2E_WORKDIR                   reuse this folder for models/outputs (default: pytest tmp)
  LRW_E2E_HUNYUAN_IMAGE_CANDIDATE   network module under test (default: lr_weights.hunyuan_image)
  LRW_E2E_TOL                       max abs diff allowed (default: 1e-5)
  LRW_E2E_THREADS                   OMP/MKL threads per trainer process (default: 1)
  PYTHONPATH                        a checkout here wins over this repository for the candidate
"""

from __future__ import annotations

import os

import pytest

from . import flux_harness
from . import hunyuan_image_harness as harness

SD_DIR = harness.sd_harness.sd_scripts_dir()
if SD_DIR is None or not (SD_DIR / "hunyuan_image_train_network.py").is_file():
    pytest.skip(
        "SD_SCRIPTS_DIR not set (or not an sd-scripts checkout with hunyuan_image_train_network.py)", allow_module_level=True
    )

UPSTREAM = "networks.lora_hunyuan_image"
CANDIDATE = os.environ.get("LRW_E2E_HUNYUAN_IMAGE_CANDIDATE", "lr_weights.hunyuan_image")
TOL = float(os.environ.get("LRW_E2E_TOL", "1e-5"))
UNET_LR = 1e-3  # the harness's --learning_rate (no text encoder is trained)

SINE25 = flux_harness.preset_weights("sine+.25", harness.NUM_DOUBLE)
COSINE25 = flux_harness.preset_weights("cosine+.25", harness.NUM_SINGLE)
SINE = flux_harness.preset_weights("sine", harness.NUM_DOUBLE)
COSINE = flux_harness.preset_weights("cosine", harness.NUM_SINGLE)
LINEAR = flux_harness.preset_weights("linear", harness.NUM_DOUBLE)
REVLIN5 = flux_harness.preset_weights("reverse_linear+.5", harness.NUM_SINGLE)
DOUBLE_DIMS = [(2, 4, 8)[i % 3] for i in range(harness.NUM_DOUBLE)]
SINGLE_DIMS = [(8, 2, 4, 6)[i % 4] for i in range(harness.NUM_SINGLE)]

# name: (candidate network_args, upstream network_args or None for "the same"[, extra trainer args])
CASES = {
    # (1) plain LoRA: every Linear of the 20 double and 40 single blocks
    "plain": ([], None),
    # (2) block LR weights, non-uniform over 20 / 40 blocks
    "block_lr": (
        ["double_lr_weight=sine+.25", "single_lr_weight=cosine+.25"],
        harness.upstream_block_lr_args(SINE25, COSINE25, UNET_LR),
    ),
    # (3) threshold: blocks with w <= 0.3 get no modules at all
    "block_lr_threshold": (
        ["double_lr_weight=sine", "single_lr_weight=cosine", "block_lr_zero_threshold=0.3"],
        harness.upstream_block_lr_args(SINE, COSINE, UNET_LR, threshold=0.3),
    ),
    # (4) split_qkv: double blocks' qkv in 3 parts, single blocks' linear1 in q, k, v and MLP
    "split_qkv": (["split_qkv=True"], None),
    # per-block dims (upstream: one network_reg_dims regex per block; alpha = network_alpha)
    "block_dims": (
        ["double_block_dims=" + ",".join(map(str, DOUBLE_DIMS)), "single_block_dims=" + ",".join(map(str, SINGLE_DIMS))],
        flux_harness.upstream_block_dims_args(DOUBLE_DIMS, SINGLE_DIMS),
    ),
    # block LR with LoRA+ (lora_up LR = unet_lr * w * ratio); linear's block 0 is at 0: no modules
    "block_lr_loraplus": (
        ["double_lr_weight=linear", "single_lr_weight=reverse_linear+.5", "loraplus_unet_lr_ratio=4"],
        harness.upstream_block_lr_args(LINEAR, REVLIN5, UNET_LR, threshold=0.0) + ["loraplus_unet_lr_ratio=4"],
    ),
    # random forward paths must draw the same random numbers in the same order
    "ggpo": (["ggpo_beta=0.01", "ggpo_sigma=0.03"], None),
    "dropouts": (["rank_dropout=0.1", "module_dropout=0.1"], None, ["--network_dropout", "0.1"]),
}

# lr_weights stores merged split_qkv alphas as alpha x parts, upstream each part's alpha (on
# purpose: docs/hunyuan_image.md item 4); upstream's file is compared in that convention.
ALPHA_X_PARTS = {"split_qkv"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return harness.HunyuanImageWorkspace(harness.sd_harness.workdir(tmp_path_factory, "hunyuan_image_e2e"), SD_DIR)


@pytest.fixture(scope="module")
def upstream_run(workspace):
    """Upstream's file for some network_args, trained once per module (a trainer run is ~40 s of CPU)."""
    runs = {}

    def run(network_args, out_name, extra_args=()):
        key = (tuple(network_args), tuple(extra_args))
        if key not in runs:
            runs[key] = workspace.train(UPSTREAM, network_args, out_name=out_name, extra_args=extra_args)
        return runs[key]

    return run


@pytest.fixture(scope="module")
def candidate_available():
    """The candidate must be importable by the trainer's interpreter with the trainer's path."""
    return harness.sd_harness.candidate_origin_or_skip(CANDIDATE, SD_DIR)


def test_upstream_is_deterministic(workspace, upstream_run):
    """Baseline: two upstream runs with the same seed give bit-identical tensors."""
    a = upstream_run([], "plain__upstream")
    b = workspace.train(UPSTREAM, out_name="plain__upstream_again")
    res, detail = harness.sd_harness.assert_same_files(workspace, a, b, "hunyuan_image: upstream vs upstream")
    assert res["max_abs_diff"] == 0.0, detail


def test_upstream_equivalents_change_training(workspace, upstream_run):
    """Guard: the per-block regex LRs and the dim-0 pruning really reach upstream (else the block
    cases prove nothing)."""
    plain = upstream_run([], "plain__upstream")
    weighted = upstream_run(CASES["block_lr"][1], "block_lr__upstream")
    res, _ = harness.sd_harness.assert_same_files(workspace, plain, weighted, "hunyuan_image: upstream plain vs block LR")
    by_block = res["max_abs_diff_by_block"]
    # sine+.25 / cosine+.25 are never exactly 1.0 on these grids: every block's LR changed
    assert all(by_block[f"D{i:02d}"] > 0.0 for i in range(harness.NUM_DOUBLE)), by_block
    assert all(by_block[f"S{i:02d}"] > 0.0 for i in range(harness.NUM_SINGLE)), by_block

    pruned = upstream_run(CASES["block_lr_threshold"][1], "block_lr_threshold__upstream")
    kept = {f"D{i:02d}" for i, w in enumerate(SINE) if w > 0.3} | {f"S{i:02d}" for i, w in enumerate(COSINE) if w > 0.3}
    assert set(workspace.compare(plain, pruned)["blocks_in_b"]) == kept


@pytest.mark.parametrize("case", list(CASES))
def test_parity_with_upstream(workspace, upstream_run, candidate_available, case):
    candidate_args, upstream_args, extra_args = harness.sd_harness.case_args(CASES[case])
    ref = upstream_run(upstream_args, f"{case}__upstream", extra_args)
    if case in ALPHA_X_PARTS:
        ref = workspace.with_split_alphas_scaled(ref)
    got = workspace.train(CANDIDATE, candidate_args, out_name=f"{case}__candidate", extra_args=extra_args)
    label = f"hunyuan_image {case}: {UPSTREAM} vs {CANDIDATE} ({candidate_available})"
    harness.sd_harness.assert_parity(workspace, ref, got, label, TOL)
