"""Oracle test: lr_weights.lora vs upstream networks.lora inside the real sd-scripts trainer.

Skipped unless SD_SCRIPTS_DIR points at a kohya-ss/sd-scripts checkout.  The
trainer runs under SD_SCRIPTS_PYTHON (default: this interpreter), which needs
sd-scripts' requirements plus open_clip_torch (for the CLIP BPE vocabulary).
See sd_scripts_harness.py for how the tiny offline SD1/SDXL models are made.

Optional environment:
  LRW_E2E_WORKDIR    reuse this folder for models/outputs (default: pytest tmp)
  LRW_E2E_CANDIDATE  network module under test (default: lr_weights.lora)
  LRW_E2E_TOL        max abs diff allowed (default: 1e-5)
  LRW_E2E_REPORT     append one JSON line per comparison (case, max abs diff) to this file
  LRW_E2E_THREADS    OMP/MKL threads per trainer process (default: 1)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from . import sd_scripts_harness as harness

SD_DIR = harness.sd_scripts_dir()
if SD_DIR is None or not (SD_DIR / "train_network.py").is_file():
    pytest.skip("SD_SCRIPTS_DIR not set (or not an sd-scripts checkout)", allow_module_level=True)

UPSTREAM = "networks.lora"
CANDIDATE = os.environ.get("LRW_E2E_CANDIDATE", "lr_weights.lora")
TOL = float(os.environ.get("LRW_E2E_TOL", "1e-5"))

CASES = {
    # (a) plain LoRA, SD1 (U-Net + text encoder)
    "sd1_lora": ("sd1", []),
    # (b) LoCon: 3x3 convs too
    "sd1_locon": ("sd1", ["conv_dim=4", "conv_alpha=1"]),
    # (c) block LR weights with preset curves
    "sd1_block_lr": (
        "sd1",
        ["down_lr_weight=sine+.25", "mid_lr_weight=1", "up_lr_weight=cosine+.25", "block_lr_zero_threshold=0"],
    ),
    # (c') LoCon + block LR where the zero threshold drops whole blocks
    "sd1_locon_block_lr_zero": (
        "sd1",
        [
            "conv_dim=4",
            "conv_alpha=1",
            "down_lr_weight=linear",
            "mid_lr_weight=0",
            "up_lr_weight=reverse_linear+.1",
            "block_lr_zero_threshold=0.2",
        ],
    ),
    # (d) SDXL plain and SDXL block LR (explicit lists, zero blocks dropped)
    "sdxl_lora": ("sdxl", []),
    "sdxl_block_lr": (
        "sdxl",
        ["down_lr_weight=1,1,1,1,0,0,1,1,1", "mid_lr_weight=1,0,1", "up_lr_weight=zeros+0.5"],
    ),
    # (d') SDXL LoCon + block LR, with --network_dropout 0: a dropout that is set (even to 0)
    # takes the plain autograd path in both implementations instead of any fused kernel.
    "sdxl_locon_block_lr_dropout0": (
        "sdxl",
        ["conv_dim=4", "conv_alpha=1", "down_lr_weight=sine", "mid_lr_weight=1,0.5,1", "up_lr_weight=cosine+.25"],
        ["--network_dropout", "0"],
    ),
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = os.environ.get("LRW_E2E_WORKDIR")
    root = Path(root) if root else tmp_path_factory.mktemp("sd_scripts_e2e")
    return harness.Workspace(root, SD_DIR)


def _assert_same(ws, a, b, label):
    res, detail = harness.assert_same_files(ws, a, b, label)
    assert res["max_abs_diff"] <= TOL, f"{label}: max abs diff {res['max_abs_diff']:.3g} > {TOL}\n{detail}"
    return res


def test_upstream_is_deterministic(workspace):
    """Baseline: two upstream runs with the same seed give the same tensors."""
    a = workspace.train("sd1", UPSTREAM, out_name="det_a")
    b = workspace.train("sd1", UPSTREAM, out_name="det_b")
    res = _assert_same(workspace, a, b, "upstream vs upstream")
    assert res["max_abs_diff"] == 0.0


@pytest.mark.parametrize("case", list(CASES))
def test_parity_with_upstream(workspace, case):
    arch, network_args, *extra = CASES[case]
    extra_args = extra[0] if extra else ()
    ref = workspace.train(arch, UPSTREAM, network_args, out_name=f"{case}__upstream", extra_args=extra_args)
    got = workspace.train(arch, CANDIDATE, network_args, out_name=f"{case}__candidate", extra_args=extra_args)
    _assert_same(workspace, ref, got, f"{case}: {UPSTREAM} vs {CANDIDATE}")
