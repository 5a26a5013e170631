"""Oracle test: lr_weights.anima vs upstream networks.lora_anima inside the real anima_train_network.py.

Skipped unless SD_SCRIPTS_DIR points at a kohya-ss/sd-scripts checkout with anima_train_network.py.
The trainer runs under SD_SCRIPTS_PYTHON (default: this interpreter), which needs sd-scripts'
requirements plus tokenizers. anima_harness.py builds the tiny offline Anima (the recorded
figures' tiny model: 28 blocks, 6-layer LLM adapter, width 32), Qwen3 folder, Qwen-Image VAE and
tokenizers; run_anima_sd_scripts.py narrows sd-scripts' fixed DiT / adapter / VAE configs to
them. Three fp32 CPU AdamW steps, seed 42, then the saved LoRA files are compared tensor by tensor.

Block weights have no upstream spelling, so upstream gets the equivalent: one `network_reg_lrs`
regex per block (and LLM adapter layer) with the absolute LR unet_lr * w (fullmatch on the dotted
module path, first match wins), and for a threshold one `exclude_patterns` regex per block at or
under it.

Tolerance: both trainers run the same float32 operations in the same order on the same inputs, so
equal LRs give bit-identical tensors (test_upstream_is_deterministic: upstream vs upstream is 0.0).
The only allowed source of difference is an LR written as a product in another order (one float32
rounding of the LR, relative 6e-8, moves three AdamW updates of size <= LR = 1e-3 by ~2e-10).
1e-5 is far above that and far below what one wrong LR does to a block (test_upstream_block_lr_
emulation_changes_training), so anything over it is a real difference.

Optional environment:
  LRW_E2E_WORKDIR          reuse this folder for models/outputs (default: pytest tmp)
  LRW_E2E_ANIMA_CANDIDATE  network module under test (default: lr_weights.anima)
  LRW_E2E_TOL              max abs diff allowed (default: 1e-5)
  LRW_E2E_THREADS          OMP/MKL threads per trainer process (default: 1)
  PYTHONPATH               a checkout here wins over this repository for the candidate
"""

from __future__ import annotations

import os

import pytest

from . import anima_harness as harness

SD_DIR = harness.sd_scripts_dir()
if SD_DIR is None or not (SD_DIR / "anima_train_network.py").is_file():
    pytest.skip("SD_SCRIPTS_DIR not set (or not an sd-scripts checkout with anima_train_network.py)", allow_module_level=True)

UPSTREAM = "networks.lora_anima"
CANDIDATE = os.environ.get("LRW_E2E_ANIMA_CANDIDATE", "lr_weights.anima")
TOL = float(os.environ.get("LRW_E2E_TOL", "1e-5"))
UNET_LR = 1e-3  # the harness passes --learning_rate and --unet_lr 1e-3 (Qwen3: default_lr, the same)

SINE25 = harness.preset_weights("sine+.25", harness.NUM_BLOCKS)
SINE = harness.preset_weights("sine", harness.NUM_BLOCKS)
COSINE25 = harness.preset_weights("cosine+.25", harness.NUM_BLOCKS)
ADAPTER = [0.25, 1.5, 0.5, 2.0, 0.75, 1.25]
ADAPTER_LINEAR = harness.preset_weights("linear", harness.NUM_ADAPTER_LAYERS)


def _csv(weights):
    return ",".join(repr(w) for w in weights)


# name: (candidate network_args, upstream network_args or None for "the same")
CASES = {
    # (1) plain LoRA: Qwen3 attention/MLP Linears + the 28 blocks' attention/MLP Linears
    "plain": ([], None),
    # (2) block LR weights over the 28 blocks (a preset, non-uniform)
    "block_lr": (["block_lr_weight=sine+.25"], harness.upstream_block_lr_args(SINE25, None, UNET_LR)),
    # (3) the LLM adapter trained too, with its own per-layer weights (an explicit list)
    "llm_adapter_lr": (
        ["train_llm_adapter=True", "block_lr_weight=cosine+.25", "llm_adapter_lr_weight=" + _csv(ADAPTER)],
        ["train_llm_adapter=True", *harness.upstream_block_lr_args(COSINE25, ADAPTER, UNET_LR)],
    ),
    # (4) threshold: blocks and adapter layers with w <= 0.3 get no modules at all
    "block_lr_threshold": (
        ["train_llm_adapter=True", "block_lr_weight=sine", "llm_adapter_lr_weight=linear", "block_lr_zero_threshold=0.3"],
        ["train_llm_adapter=True", *harness.upstream_block_lr_args(SINE, ADAPTER_LINEAR, UNET_LR, threshold=0.3)],
    ),
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return harness.AnimaWorkspace(harness.sd_harness.workdir(tmp_path_factory, "anima_e2e"), SD_DIR)


@pytest.fixture(scope="module")
def candidate_available():
    """The candidate must be importable by the trainer's interpreter with the trainer's path."""
    return harness.sd_harness.candidate_origin_or_skip(CANDIDATE, SD_DIR)


def test_upstream_is_deterministic(workspace):
    """Baseline: two upstream runs with the same seed give bit-identical tensors."""
    a = workspace.train(UPSTREAM, out_name="anima_det_a")
    b = workspace.train(UPSTREAM, out_name="anima_det_b")
    res, detail = harness.assert_same_files(workspace, a, b, "anima upstream vs upstream")
    assert res["max_abs_diff"] == 0.0, detail


def test_upstream_block_lr_emulation_changes_training(workspace):
    """Guard: the per-block and per-adapter-layer regex LRs really reach upstream's optimizer (else
    the block cases prove nothing)."""
    plain = workspace.train(UPSTREAM, ["train_llm_adapter=True"], out_name="anima_adapter_plain__upstream")
    weighted = workspace.train(UPSTREAM, CASES["llm_adapter_lr"][1], out_name="anima_llm_adapter_lr__upstream")
    res, _ = harness.assert_same_files(workspace, plain, weighted, "anima upstream adapter plain vs upstream block/adapter LR")
    by_block = res["max_abs_diff_by_block"]
    # cosine+.25 is never exactly 1.0 on 28 blocks, nor is any adapter weight: every LR changed.
    assert all(by_block[f"B{i:02d}"] > TOL for i in range(harness.NUM_BLOCKS)), by_block
    assert all(by_block[f"A{j:02d}"] > TOL for j in range(harness.NUM_ADAPTER_LAYERS)), by_block


@pytest.mark.parametrize("case", list(CASES))
def test_parity_with_upstream(workspace, candidate_available, case):
    candidate_args, upstream_args = CASES[case]
    upstream_args = candidate_args if upstream_args is None else upstream_args
    ref = workspace.train(UPSTREAM, upstream_args, out_name=f"anima_{case}__upstream")
    got = workspace.train(CANDIDATE, candidate_args, out_name=f"anima_{case}__candidate")
    res, detail = harness.assert_same_files(workspace, ref, got, f"anima {case}: {UPSTREAM} vs {CANDIDATE} ({candidate_available})")
    print(f"{case}: max abs diff {res['max_abs_diff']:.3g} over {res['n_keys_a']} tensors ({candidate_available})")
    assert res["max_abs_diff"] <= TOL, f"{case}: max abs diff {res['max_abs_diff']:.3g} > {TOL}\n{detail}"
