"""What gets installed, and what the library imports."""

import importlib
import importlib.metadata
import importlib.util
import os
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
        "import sys, lr_weights.lora, lr_weights.network.lora_network, lr_weights.files.io, lr_weights.models.tiny, lr_weights.cli; "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'diffusers','transformers','accelerate','matplotlib','library','networks','peft'})))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel pip builds from this checkout through pyproject.toml (PEP 517, isolated build)."""
    folder = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(folder), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    (built,) = folder.glob("*.whl")
    return built


@pytest.mark.slow
def test_wheel_holds_the_package_but_not_the_networks_shim_folder(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "lr_weights/lora.py" in names
    assert not any(n.startswith("networks/") for n in names)
    assert any(n.endswith("entry_points.txt") for n in names)


def test_every_runtime_import_is_declared():
    # safetensors' save() imports numpy, which neither torch nor safetensors declares.
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {requirement.split(">")[0].split("=")[0].split(";")[0].strip().lower() for requirement in project["dependencies"]}
    assert declared == {"torch", "safetensors", "numpy"}
    assert not any("==" in requirement or "<" in requirement for requirement in project["dependencies"])  # no pins


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_demo_and_bake(wheel, tmp_path):
    """Only what the wheel declares (plus the torch CPU wheel): a missing dependency fails here."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    torch_requirement = "torch==" + importlib.metadata.version("torch").split("+")[0]
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", torch_requirement, str(wheel)], capture_output=True, text=True, timeout=1200
    )
    assert install.returncode == 0, install.stderr[-2000:]
    command = [str(python), "-m", "lr_weights.cli"]
    demo = subprocess.run(command + ["demo", "--steps", "1"], capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert demo.returncode == 0, demo.stderr[-2000:]
    lora_file = tmp_path / "lr_weights_demo.safetensors"
    assert f"wrote {lora_file}" in demo.stdout
    baked = tmp_path / "outd.safetensors"
    bake = subprocess.run(command + ["bake", str(lora_file), "--lbw", "OUTD", "-o", str(baked), "--no-progress"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert bake.returncode == 0, bake.stderr[-2000:]
    assert baked.stat().st_size > 0
