"""The README's set-up commands are the ones CI runs, and the examples use valid settings."""

import json
import shlex
from pathlib import Path

import pytest

from lr_weights.archs.blocks import SD
from lr_weights.args.settings import parse_network_settings

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines[:8] if line.startswith("    ")]


def test_readme_starts_with_the_demo_and_the_test_command():
    demo, tests = readme_commands()[:2]
    assert demo.endswith("lr-weights demo")
    assert "pytest" in tests


def test_ci_runs_the_readme_lines_in_a_brand_new_venv():
    # .ci/run reads the two lines from README.md and runs them as written in a venv of its own.
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python3 -m venv" in script and 'source "$venv/bin/activate"' in script
    assert 'read_text(encoding="utf-8").splitlines()[:8]' in script and 'l.startswith("    ")' in script


@pytest.mark.parametrize("name", ["gui-v189-sine-cosine.json", "gui-v186-constant.json"])
def test_example_gui_configs_are_valid_settings(name):
    config = json.loads((ROOT / "examples" / name).read_text(encoding="utf-8"))
    assert "--network_module=lr_weights.lora" in shlex.split(config["additional_parameters"])
    keys = ("down_lr_weight", "mid_lr_weight", "up_lr_weight")
    parse_network_settings(SD, config["network_dim"], config["network_alpha"], {k: config[k] for k in keys if config[k]})


def test_example_toml_network_args_are_valid_settings():
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    config = tomllib.loads((ROOT / "examples" / "sd15-sine-cosine.toml").read_text(encoding="utf-8"))
    assert config["network_module"] == "lr_weights.lora"
    kwargs = dict(arg.split("=", 1) for arg in config["network_args"])
    resolved = parse_network_settings(SD, config["network_dim"], config["network_alpha"], kwargs)
    assert resolved.options.block_lr_weights[0] == 0.25
