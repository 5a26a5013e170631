"""What gets installed, and what the library imports."""

import importlib
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("shim_file, module_name", [("lora_lr_weights.py", "lora"), ("dylora_lr_weights.py", "dylora")])
def test_copy_in_shims_reexport_the_modules(shim_file, module_name):
    spec = importlib.util.spec_from_file_location(f"{module_name}_shim", ROOT / "networks" / shim_file)
    shim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shim)
    module = importlib.import_module(f"lr_weights.{module_name}")

    assert shim.create_network is module.create_network
    assert shim.create_network_from_weights is module.create_network_from_weights
    assert shim.get_block_lr_weight is module.get_block_lr_weight


def test_library_imports_only_torch_and_safetensors():
    # tqdm is not checked: torch itself imports it.
    code = (
        "import sys, lr_weights.lora, lr_weights.network, lr_weights.io, lr_weights.tiny, lr_weights.cli; "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'diffusers','transformers','accelerate','matplotlib','library','networks','peft'})))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.slow
def test_wheel_holds_the_package_but_not_the_networks_shim_folder(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lr_weights/lora.py" in names
    assert not any(n.startswith("networks/") for n in names)
    assert any(n.endswith("entry_points.txt") for n in names)
