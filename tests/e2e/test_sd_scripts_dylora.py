"""Oracle test: lr_weights.dylora vs upstream networks.dylora inside the real sd-scripts trainer.

Skipped unless SD_SCRIPTS_DIR points at an sd-scripts checkout (see test_sd_scripts_parity.py).
With plain SGD the two agree to rounding: same keys and shapes, same init, same slices drawn from
Python's `random`. With AdamW they differ on purpose: our frozen rank rows get a zero gradient
(upstream: none), so Adam's momentum and weight decay still move them (docs/dylora_lbw.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from . import sd_scripts_harness as harness

SD_DIR = harness.sd_scripts_dir()
if SD_DIR is None or not (SD_DIR / "train_network.py").is_file():
    pytest.skip("SD_SCRIPTS_DIR not set (or not an sd-scripts checkout)", allow_module_level=True)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = os.environ.get("LRW_E2E_WORKDIR")
    return harness.Workspace(Path(root) if root else tmp_path_factory.mktemp("sd_scripts_dylora"), SD_DIR)


def test_dylora_matches_upstream_with_sgd(workspace):
    extra = ["--optimizer_type", "torch.optim.SGD"]
    ref = workspace.train("sd1", "networks.dylora", ["unit=2"], out_name="dylora_sgd__upstream", steps=4, extra_args=extra)
    got = workspace.train("sd1", "lr_weights.dylora", ["unit=2"], out_name="dylora_sgd__candidate", steps=4, extra_args=extra)
    result = workspace.compare(ref, got)
    assert result["n_keys_a"] > 0 and not result["only_in_a"] and not result["only_in_b"]
    assert not result["shape_or_dtype_mismatch"]
    assert result["max_abs_diff"] <= 1e-6


def test_dylora_with_block_lrs_trains_and_saves(workspace):
    path = workspace.train(
        "sd1", "lr_weights.dylora",
        ["unit=2", "conv_dim=4", "down_lr_weight=sine+.25", "mid_lr_weight=1", "up_lr_weight=cosine+.25"],
        out_name="dylora_blocks__candidate", steps=3,
    )
    assert path.stat().st_size > 0
