"""Oracle test: lr_weights.lycoris vs lycoris-lora's own `lycoris.kohya` in the real sd-scripts trainer.

Skipped unless SD_SCRIPTS_DIR points at an sd-scripts checkout whose interpreter (SD_SCRIPTS_PYTHON)
has lycoris-lora installed. Same seed, same args: the saved tensors must agree to LRW_E2E_TOL.

On SD1/SD2 lycoris.kohya's default preset (`full`) stops with "duplicated lora name:
lora_unet_time_embedding_linear_1": it lists the TimestepEmbedding class and the names
`time_embedding.linear_1/2`, so those layers match twice. Our default builds one module per layer;
its upstream twin is `full` without those two names (the class match already covers them), which
upstream can build: same modules, same order, same random numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from . import sd_scripts_harness as harness

SD_DIR = harness.sd_scripts_dir()
if SD_DIR is None or not (SD_DIR / "train_network.py").is_file():
    pytest.skip("SD_SCRIPTS_DIR not set (or not an sd-scripts checkout)", allow_module_level=True)
if subprocess.run([harness.sd_python(), "-c", "import lycoris.kohya"], capture_output=True).returncode != 0:
    pytest.skip("lycoris-lora is not installed in the sd-scripts interpreter", allow_module_level=True)

TOL = float(os.environ.get("LRW_E2E_TOL", "1e-5"))
UPSTREAM = "lycoris.kohya"
CANDIDATE = "lr_weights.lycoris"


def full_without_duplicate_names() -> str:
    """lycoris-lora's own `full` preset minus the two names its class list already covers, as TOML."""
    out = subprocess.run(
        [harness.sd_python(), "-c", "import json; from lycoris.config import PRESET; print(json.dumps(PRESET['full']))"],
        capture_output=True, text=True, check=True,
    )
    preset = json.loads(out.stdout)
    preset["unet_target_name"] = [n for n in preset["unet_target_name"] if not n.startswith("time_embedding.")]
    lines = []
    for key, value in preset.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = os.environ.get("LRW_E2E_WORKDIR")
    return harness.Workspace(Path(root) if root else tmp_path_factory.mktemp("sd_scripts_lycoris"), SD_DIR)


def assert_same(ws, a, b, label):
    res = ws.compare(a, b)
    detail = json.dumps({k: res[k] for k in ("only_in_a", "only_in_b", "shape_or_dtype_mismatch", "max_abs_diff", "worst")}, indent=1)
    print(f"{label}: max abs diff {res['max_abs_diff']:.3g} over {res['n_keys_a']} tensors")
    assert res["n_keys_a"] > 0
    assert not res["only_in_a"] and not res["only_in_b"], f"{label}: key sets differ\n{detail}"
    assert not res["shape_or_dtype_mismatch"], f"{label}\n{detail}"
    assert res["max_abs_diff"] <= TOL, f"{label}: max abs diff {res['max_abs_diff']:.3g} > {TOL}\n{detail}"
    return res


CASES = {
    "sd1_lokr_attn_mlp": ("sd1", ["algo=lokr", "factor=4", "preset=attn-mlp"]),
    "sd1_loha_attn_mlp": ("sd1", ["algo=loha", "preset=attn-mlp"]),
    "sdxl_lokr_full": ("sdxl", ["algo=lokr", "factor=4"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_as_lycoris_kohya(workspace, case):
    arch, args = CASES[case]
    ref = workspace.train(arch, UPSTREAM, args, out_name=f"lyco_{case}__upstream")
    got = workspace.train(arch, CANDIDATE, args, out_name=f"lyco_{case}__candidate")
    assert_same(workspace, ref, got, case)


@pytest.mark.parametrize("algo,args", [("lokr", ["factor=4"]), ("loha", [])])
def test_sd1_default_preset_trains_where_upstream_crashes(workspace, algo, args):
    preset = workspace.root / "full_without_duplicate_names.toml"
    preset.write_text(full_without_duplicate_names())
    with pytest.raises(RuntimeError, match="duplicated lora name: lora_unet_time_embedding_linear_1"):
        workspace.train("sd1", UPSTREAM, [f"algo={algo}", *args], out_name=f"lyco_sd1_{algo}_default__upstream_crash")
    ref = workspace.train("sd1", UPSTREAM, [f"algo={algo}", f"preset={preset}", *args], out_name=f"lyco_sd1_{algo}_default__upstream")
    got = workspace.train("sd1", CANDIDATE, [f"algo={algo}", *args], out_name=f"lyco_sd1_{algo}_default__candidate")
    assert_same(workspace, ref, got, f"sd1 {algo} default preset")


def test_block_lrs_train_and_save(workspace):
    path = workspace.train(
        "sd1", CANDIDATE,
        ["algo=lokr", "factor=4", "down_lr_weight=sine+.25", "mid_lr_weight=1", "up_lr_weight=cosine+.25", "block_lr_zero_threshold=0.4"],
        out_name="lyco_sd1_lokr_blocks__candidate",
    )
    from safetensors import safe_open

    from lr_weights.archs.blocks import SD, block_index

    with safe_open(str(path), "pt") as handle:
        keys = list(handle.keys())
        rows = json.loads(handle.metadata()["lr_weights_blocks"])
    pruned = {r["block"] for r in rows if r["status"] == "pruned"}
    assert 1 in pruned  # sine+.25 is 0.39 in IN01, at or under the threshold 0.4
    assert not [k for k in keys if k.startswith("lora_unet") and block_index(k.split(".")[0], SD) in pruned]
    assert [k for k in keys if k.startswith("lora_unet") and block_index(k.split(".")[0], SD) == 12]  # M00, weight 1
