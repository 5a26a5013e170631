"""File I/O: sd-scripts' hashes from their definition, atomic writes, readable errors."""

import hashlib
import os

import pytest
import torch
from safetensors.torch import save

from lr_weights.files import io
def tensors():
    torch.manual_seed(0)
    # Big enough that the legacy hash window (64 KiB at 1 MiB) lies inside the data.
    return {"lora_unet_a.lora_down.weight": torch.randn(4, 300_000), "lora_unet_a.alpha": torch.tensor(1.0)}


def test_hashes_follow_their_definition(tmp_path):
    path = tmp_path / "x.safetensors"
    io.save_lora_file(str(path), tensors(), {"ss_network_dim": "4", "other": "not hashed"})
    data = path.read_bytes()
    metadata = io.read_metadata(path)
    # Model hash: sha256 of everything after the 8-byte length and the header. The data region does
    # not depend on the metadata, so the saved file itself gives the expected value.
    header = int.from_bytes(data[:8], "little")
    assert metadata["sshs_model_hash"] == hashlib.sha256(data[8 + header :]).hexdigest()
    # Legacy hash: 64 KiB at offset 1 MiB of the serialisation with only the ss_* metadata.
    reference = save(tensors(), {"ss_network_dim": "4"})
    assert metadata["sshs_legacy_hash"] == hashlib.sha256(reference[0x100000:0x110000]).hexdigest()[:8]
    assert metadata["other"] == "not hashed"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "keep.safetensors"
    io.save_lora_file(str(path), tensors(), {})
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        io.save_lora_file(str(path), {"other.alpha": torch.tensor(2.0)}, {})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.safetensors"]


def test_torch_formats_round_trip(tmp_path):
    for suffix in (".pt", ".ckpt"):
        path = tmp_path / f"x{suffix}"
        io.save_lora_file(str(path), tensors(), None)
        loaded = io.load_lora_file(str(path))
        assert torch.equal(loaded["lora_unet_a.lora_down.weight"], tensors()["lora_unet_a.lora_down.weight"])


def test_unreadable_files_name_the_file(tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="broken.safetensors"):
        io.load_lora_file(str(broken))
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        io.load_lora_file(str(tmp_path / "missing.safetensors"))


def test_metadata_must_be_strings(tmp_path):
    with pytest.raises(ValueError, match="ss_network_dim"):
        io.save_lora_file(str(tmp_path / "m.safetensors"), tensors(), {"ss_network_dim": 4})


@pytest.mark.skipif(not hasattr(os, "umask"), reason="POSIX modes")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    # What `open(path, "w")` would give: a WebUI running as another user reads a 0644 LoRA.
    previous = os.umask(umask)
    try:
        assert io.current_umask() == umask
        target = tmp_path / "x.safetensors"
        io.save_lora_file(str(target), {"a.alpha": torch.tensor(1.0)}, {})
        io.atomic_write_bytes(str(tmp_path / "y.toml"), b"x = 1\n")
        replaced = tmp_path / "z.png"
        replaced.write_bytes(b"old")
        os.chmod(replaced, 0o600)
        io.atomic_write_bytes(str(replaced), b"new")  # a replaced file too: it is a new inode
    finally:
        os.umask(previous)
    for name in ("x.safetensors", "y.toml", "z.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_a_missing_folder_is_named_as_given(tmp_path):
    target = tmp_path / "nonexistent" / "dir" / "x.safetensors"
    with pytest.raises(io.NetworkArgError) as error:
        io.save_lora_file(str(target), {"a.alpha": torch.tensor(1.0)}, {})
    assert str(target) in str(error.value) and ".tmp" not in str(error.value)
    assert "does not exist" in str(error.value)
    with pytest.raises(io.NetworkArgError, match="this is a folder"):
        io.check_output_path(str(tmp_path), "-o")
    assert io.check_output_path(str(tmp_path / "new.safetensors"), "-o") == str(tmp_path / "new.safetensors")
