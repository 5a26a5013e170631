"""lr-weights demo: the training job on a tiny model, explained, writing where it is told."""

import os

import pytest

from lr_weights.files.io import load_lora_file


@pytest.mark.slow
def test_demo_takes_network_args_as_plan_does_and_names_its_file(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output lands in the current folder
    result = cli("demo", "--steps", "1", "--network_args", "down_lr_weight=linear", "conv_dim=2", "--network_dim", "2")
    assert result.code == 0, result.err
    written = tmp_path / "lr_weights_demo.safetensors"
    assert f"wrote {written} (" in result.out  # the absolute path
    assert "the loss is noise" in result.out
    tensors = load_lora_file(str(written))
    # conv_dim=2 reached the network: k x k conv modules exist, at rank 2
    assert any(v.dim() == 4 and v.shape[2:] == (3, 3) and v.shape[0] == 2 for k, v in tensors.items() if k.endswith("lora_down.weight"))
    # down_lr_weight=linear prunes IN00 (weight 0); its group is absent
    assert "unet_block0 " not in result.out and "unet_block1 " in result.out


def test_demo_refuses_a_missing_output_folder_before_training(cli, tmp_path):
    target = tmp_path / "nonexistent" / "dir" / "x.safetensors"
    result = cli("demo", "--output", target)
    assert result.code == 2
    assert result.out == ""  # nothing trained
    assert f"--output='{target}'" in result.err and f"{target.parent} does not exist" in result.err


def test_demo_default_output_is_ignored_by_git():
    from pathlib import Path

    from lr_weights.cli.demo import DEFAULT_OUTPUT

    ignored = (Path(__file__).resolve().parents[3] / ".gitignore").read_text(encoding="utf-8").split()
    assert DEFAULT_OUTPUT in ignored and os.sep not in DEFAULT_OUTPUT
