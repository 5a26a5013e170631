"""The `lr-weights` command as a whole: help without torch, errors with usage, quiet pipes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lr_weights.cli import SUBCOMMANDS

ROOT = Path(__file__).resolve().parents[3]


def _python(code):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("argv", [["--help"]] + [[name, "--help"] for name in SUBCOMMANDS])
def test_help_imports_no_torch(argv):
    # Help must answer at once, also where importing torch takes seconds (a cold CUDA build).
    out = _python(
        "import sys\n"
        "from lr_weights.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print('\\nHEAVY:', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'safetensors', 'matplotlib')))"
    )
    assert out.rstrip().endswith("HEAVY: []"), out[-400:]
    assert "usage: lr-weights" in out


def test_an_error_while_running_shows_the_subcommands_usage(tmp_path):
    from lr_weights.cli import main

    result = subprocess.run(
        [sys.executable, "-m", "lr_weights.cli", "bake", str(tmp_path / "missing.safetensors"), "--lbw", "ALL", "-o", str(tmp_path / "o.safetensors")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert result.returncode == 2
    usage, error = result.stderr.split("\nlr-weights bake: error: ")
    assert usage.startswith("usage: lr-weights bake") and "missing.safetensors" in error
    assert main is not None


def test_plan_into_a_closed_pipe_exits_quietly():
    # `lr-weights plan ... | head -1`: the reader stops early; no BrokenPipeError traceback.
    command = f"{sys.executable} -m lr_weights.cli plan --arch sd1 | head -1"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.stdout.startswith("lr_weights plan: sd1")
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not hasattr(os, "umask"), reason="POSIX modes")
def test_subcommand_modules_do_not_import_heavy_packages_at_top_level():
    # The rule --help relies on, checked where it is kept: each subcommand module on its own.
    names = ", ".join(f"lr_weights.cli.{n}" for n in SUBCOMMANDS)
    out = _python(f"import sys, importlib\nfor n in '{names}'.split(', '):\n    importlib.import_module(n)\nprint('torch' in sys.modules)")
    assert out.strip() == "False"
