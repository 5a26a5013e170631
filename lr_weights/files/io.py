"""LoRA files: load and save (safetensors or torch), sd-scripts' model hashes, atomic writes.

A file is only ever written under a temporary name in the target folder, flushed to disk, and then
renamed over the target, so a crash or a full disk never leaves half a LoRA behind.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import time
from typing import Dict, List, Mapping, Optional

import torch

from lr_weights.errors import NetworkArgError

SAFETENSORS_SUFFIX = ".safetensors"
LEGACY_HASH_OFFSET = 0x100000
LEGACY_HASH_LENGTH = 0x10000


def is_safetensors_path(path: str) -> bool:
    return os.path.splitext(str(path))[1].lower() == SAFETENSORS_SUFFIX


def temporary_prefix(path: str) -> str:
    """The name prefix of `path`'s temporary siblings: `.<name>.` (hashed when the name is long)."""
    name = os.path.basename(os.fspath(path))
    if len(name.encode("utf-8", "surrogatepass")) > 200:  # keep temporary names under NAME_MAX
        name = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return "." + name + "."


def current_umask() -> int:
    """The process umask, read without changing it where the platform allows."""
    try:  # Linux 4.7+: no window in which another thread would create files with umask 0
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_output_path(path: str, option: str) -> str:
    """`path` as given, after checking that its folder exists; call before any slow work.

    A missing folder would otherwise surface only at the end, as an error about our temporary
    file's name rather than the path the user typed.
    """
    text = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise NetworkArgError(option, text, f"a file in an existing folder ({folder} {what})")
    if os.path.isdir(text):
        raise NetworkArgError(option, text, "a file name (this is a folder)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise NetworkArgError(option, text, f"a file in a folder you can write to ({folder} is not writable)")
    return text


def atomic_write_bytes(path: str, data: bytes, *, keep_mode: bool = False) -> None:
    """Write `data` to `path` so that `path` holds either its old content or all of `data`.

    A new file gets the mode any other tool's new file gets (0666 less the umask): mkstemp's 0600
    would keep a WebUI running as another user from reading a LoRA. A replaced file is a new inode
    and gets that mode too, unless `keep_mode` (a file changed in place, `bake --in-place`): then
    it keeps its own (a 0600 file stays private). A process killed mid-write
    leaves its temporary `.<name>.<random>.tmp` behind; the next successful write of the same path
    removes those that were not touched since it started.
    """
    path = check_output_path(path, "output file")
    folder = os.path.dirname(os.path.abspath(path))
    started = time.time()
    fd, temporary = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".tmp", dir=folder)
    try:
        _set_mode(fd, temporary, _mode_for(path) if keep_mode else 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    _fsync_folder(folder)
    remove_stale_temporaries(path, older_than=started)


def _mode_for(path: str) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def _set_mode(fd: int, path: str, mode: int) -> None:
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)
    else:  # Windows before Python 3.13: only the read-only bit exists there anyway
        os.chmod(path, mode)


def remove_stale_temporaries(path: str, older_than: float) -> List[str]:
    """Remove temporaries of `path` last modified before `older_than` (left by killed writers).

    A temporary that another live writer of the same path is filling keeps a fresh mtime and
    stays; sd-scripts saves from one process only, so in practice these are all leftovers.
    """
    folder = os.path.dirname(os.path.abspath(path))
    prefix = temporary_prefix(path)
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        candidate = os.path.join(folder, name)
        try:
            if os.path.getmtime(candidate) < older_than:
                os.unlink(candidate)
                removed.append(candidate)
        except OSError:  # gone already, or not ours to remove
            continue
    return removed


def _fsync_folder(folder: str) -> None:
    # Makes the rename itself durable; not every platform lets a folder be opened for this.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def model_hashes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> Dict[str, str]:
    """`sshs_model_hash` and `sshs_legacy_hash` as sd-scripts computes them (CONTRACT §6).

    Both hash the safetensors serialisation of the same tensors with only the `ss_*` metadata,
    which users treat as immutable; the model hash covers the bytes after the header, the legacy
    hash 64 KiB at offset 1 MiB.
    """
    from safetensors.torch import save

    training_metadata = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    blob = save(dict(tensors), training_metadata)
    header_length = int.from_bytes(blob[:8], "little")
    return {
        "sshs_model_hash": hashlib.sha256(blob[8 + header_length :]).hexdigest(),
        "sshs_legacy_hash": hashlib.sha256(blob[LEGACY_HASH_OFFSET : LEGACY_HASH_OFFSET + LEGACY_HASH_LENGTH]).hexdigest()[:8],
    }


def _check_metadata(metadata: Mapping[str, object]) -> Dict[str, str]:
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise NetworkArgError("metadata", f"{key}: {value!r}", "string keys and string values (safetensors stores strings only)")
    return dict(metadata)


def save_lora_file(path: str, tensors: Mapping[str, torch.Tensor], metadata: Optional[Mapping[str, str]] = None, *, keep_mode: bool = False) -> None:
    """Save tensors (already on the CPU, in the save dtype) as safetensors with hashes, or torch;
    `keep_mode`: see atomic_write_bytes."""
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    if is_safetensors_path(path):
        from safetensors.torch import save

        metadata = _check_metadata(metadata or {})
        metadata.update(model_hashes(tensors, metadata))
        atomic_write_bytes(path, save(tensors, metadata), keep_mode=keep_mode)
        return
    import io

    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    atomic_write_bytes(path, buffer.getvalue(), keep_mode=keep_mode)


def is_same_file(a: str, b: str) -> bool:
    """Whether `b` exists and is the file `a` (an in-place write)."""
    return os.path.exists(b) and os.path.exists(a) and os.path.samefile(a, b)


def require_file(path: str, what: str = "LoRA file") -> str:
    """`path` as a string when it is a file; else an error saying what it is instead."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a folder; give a {what} inside it")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def load_lora_file(path: str) -> Dict[str, torch.Tensor]:
    """A LoRA state dict from .safetensors, .pt or .ckpt, on the CPU. Errors name the file."""
    path = require_file(path)
    if is_safetensors_path(path):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as error:  # safetensors raises its own error types for bad headers
            raise ValueError(f"{path} is not a readable safetensors file ({type(error).__name__}: {error})") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # torch < 1.13 has no weights_only
        loaded = torch.load(path, map_location="cpu")
    except Exception as error:
        raise ValueError(f"{path} is not a readable torch file ({type(error).__name__}: {error})") from None
    if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"{path} does not hold a LoRA state dict (a mapping of names to tensors)")
    return dict(loaded)


def read_metadata(path: str) -> Dict[str, str]:
    """The string metadata of a safetensors file, without reading its tensors."""
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt") as handle:
        return dict(handle.metadata() or {})
