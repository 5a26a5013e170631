"""Oracle test: every option `lr-weights gui` writes for an SD3, Lumina, Flux.1, Anima or
HunyuanImage-2.1 GUI config is an option of the training script it names, as the real sd-scripts
parser defines it (sd-scripts reads any key of a --config_file without complaint, so a misspelt
option would be silently ignored there); and what a family panel lists as unread is exactly what
that parser lacks.

Skipped unless SD_SCRIPTS_DIR points at an sd-scripts checkout with those five training scripts;
the parsers are built by SD_SCRIPTS_PYTHON (default: this interpreter).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lr_weights.cli.gui_config import gui_to_sd_scripts
from lr_weights.cli.gui_families import PANELS
from lr_weights.archs import ARCHITECTURES

from . import sd_scripts_harness as harness

SD_DIR = harness.sd_scripts_dir()
SCRIPTS = ("sd3_train_network", "lumina_train_network", "flux_train_network", "anima_train_network", "hunyuan_image_train_network")
if SD_DIR is None or not all((SD_DIR / f"{name}.py").is_file() for name in SCRIPTS):
    pytest.skip("SD_SCRIPTS_DIR not set (or not an sd-scripts checkout with the SD3, Lumina, FLUX, Anima and HunyuanImage trainers)", allow_module_level=True)

SYNTHETIC = Path(__file__).resolve().parents[1] / "fixtures" / "gui-configs" / "synthetic"
_PRINT_OPTIONS = (
    "import importlib, json\n"
    f"print(json.dumps({{name + '.py': sorted(a.dest for a in importlib.import_module(name).setup_parser()._actions) for name in {SCRIPTS!r}}}))\n"
)


@pytest.fixture(scope="module")
def options():
    done = subprocess.run([harness.sd_python(), "-c", _PRINT_OPTIONS], cwd=SD_DIR, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "name",
    [
        "sd3-standard-blocks-v26.0.0.json", "sd3-locon-v26.0.0.json", "lumina-blocks-v26.0.0.json", "flux1-panel-v26.0.0.json",
        "flux1-defaults-v26.0.0.json", "anima-panel-v26.0.0.json", "anima-defaults-v26.0.0.json", "hunyuan-image-panel-v26.0.0.json",
        "hunyuan-image-te-lr-v26.0.0.json", "../v26.0.0/presets-lora-flux1D-adamw8bit-fp8.json",
    ],
)
def test_every_converted_option_is_the_scripts(options, name):
    converted = gui_to_sd_scripts(json.loads((SYNTHETIC / name).read_text(encoding="utf-8")))
    assert converted.script in options
    assert [key for key in converted.table if key not in options[converted.script]] == []


@pytest.mark.parametrize("entry_point", sorted(PANELS))
def test_a_panels_unread_options_are_those_its_script_lacks(options, entry_point):
    panel = PANELS[entry_point]
    script = next(arch.training_script for arch in ARCHITECTURES.values() if arch.entry_point == entry_point)
    written = {field.option for field in panel.fields}
    assert sorted(written - set(options[script])) == sorted(panel.unread)
