"""Saves that cannot corrupt: a process killed at any point of `save_weights` leaves the previous
complete file or the new complete file, never a mix; leftovers of killed writers are cleaned up;
and every writer in the package goes through the one atomic writer (lr_weights.files.io)."""

import multiprocessing
import os
import random
import re
import signal
import time
from pathlib import Path

import pytest
import torch

from lr_weights import lora

from lr_weights.files import io
from lr_weights.files.io import atomic_write_bytes, load_lora_file, read_metadata, remove_stale_temporaries, temporary_prefix

from tests.upstream_models import rebuild

PACKAGE = Path(__file__).resolve().parents[3] / "lr_weights"
KILLS = 24


def _large_network():
    # An SD1 LoRA at dim 12 (about 28 MB in fp32): the adapters are real tensors even though the
    # model they sit on is a meta-device skeleton.
    te, unet = rebuild("sd1")
    torch.manual_seed(0)
    return lora.create_network(1.0, 12, 1, None, te, unet)


def _save_version(network, path, version):
    # Two contents that differ in tensors and metadata; each save goes through the real path.
    with torch.no_grad():
        for module in network.all_loras:
            module.lora_up.weight.fill_(1.0 if version == "A" else 2.0)
    network.save_weights(str(path), torch.float32, {"ss_version": version})


def _save_forever(network, path, first):
    versions = first + ("B" if first == "A" else "A")
    count = 0
    while True:
        _save_version(network, path, versions[count % 2])
        count += 1


def _temporaries(folder, target):
    prefix = temporary_prefix(target)
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp"))


def _wait_for_version_change(target, on_disk, writer, limit=120.0):
    deadline = time.monotonic() + limit
    while read_metadata(target)["ss_version"] == on_disk:
        assert writer.is_alive() and time.monotonic() < deadline, "the writer never completed a save"
        time.sleep(0.005)


@pytest.mark.slow
def test_sigkill_mid_save_leaves_a_complete_file(tmp_path):
    network = _large_network()
    target = tmp_path / "run.safetensors"
    # safetensors writes the metadata in hash-map order, so two saves of the same content may
    # differ in bytes: a file is compared by its tensors and metadata (and its size).
    references = {}
    for version in "AB":
        reference = tmp_path / f"reference_{version}.safetensors"
        _save_version(network, reference, version)
        references[version] = (reference.stat().st_size, load_lora_file(str(reference)), read_metadata(reference))
    assert references["A"][0] > 20_000_000

    started = time.perf_counter()
    _save_version(network, target, "A")
    one_save = time.perf_counter() - started

    context = multiprocessing.get_context("fork")
    rng = random.Random(6)
    outcomes = {"new": 0, "previous": 0}
    left_temporaries = 0
    # Kills in a row that came before the writer completed a save: each leaves one temporary that
    # no completed save has cleaned up yet. A completed save removes every older temporary.
    kills_without_a_save = 0
    on_disk = "A"
    for kill in range(KILLS):
        # Each writer starts with the version that is not on disk, so every completed save shows.
        writer = context.Process(target=_save_forever, args=(network, target, "B" if on_disk == "A" else "A"), daemon=True)
        writer.start()
        if kill % 2:
            # Late kills: after the writer's first save has landed (watched, not timed, so a loaded
            # machine cannot turn them into early ones), somewhere inside a later save.
            _wait_for_version_change(target, on_disk, writer)
            time.sleep(rng.uniform(0.0, 1.0) * one_save)
        else:
            # Early kills: most land inside the writer's first save.
            time.sleep(rng.uniform(0.0, 0.3) * one_save)
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(10)
        assert writer.exitcode == -signal.SIGKILL

        version = read_metadata(target)["ss_version"]
        size, tensors, metadata = references[version]
        assert target.stat().st_size == size and read_metadata(target) == metadata
        loaded = load_lora_file(str(target))
        assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
        outcomes["new" if version != on_disk else "previous"] += 1
        kills_without_a_save = 0 if version != on_disk else kills_without_a_save + 1
        on_disk = version
        temporaries = _temporaries(tmp_path, target)
        left_temporaries += bool(temporaries)
        # The killed writer's own temporary, plus one from each earlier writer killed before it
        # completed a save (how many that is depends on the machine's speed, not on our code).
        assert len(temporaries) <= 1 + kills_without_a_save, (temporaries, kills_without_a_save)

    # Some kills came before the writer's first save completed and some after: every late kill
    # came after one (watched), and the file then shows the new version unless a second save also
    # completed (the writer alternates), which a kill within one save time rarely allows.
    assert outcomes["new"] and outcomes["previous"], outcomes
    _save_version(network, target, "B")
    assert _temporaries(tmp_path, target) == []
    loaded = load_lora_file(str(target))
    assert all(torch.all(v == 2.0) for k, v in loaded.items() if k.endswith("lora_up.weight"))
    print(f"{KILLS} kills: previous file kept {outcomes['previous']}x, new file {outcomes['new']}x; a temporary was left {left_temporaries}x")


def test_stale_temporaries_are_removed_fresh_ones_kept(tmp_path):
    target = tmp_path / "x.safetensors"
    stale = tmp_path / (temporary_prefix(target) + "killed.tmp")
    fresh = tmp_path / (temporary_prefix(target) + "live.tmp")
    other = tmp_path / ".y.safetensors.killed.tmp"
    for path in (stale, fresh, other):
        path.write_bytes(b"partial")
    long_ago = time.time() - 3600
    for path in (stale, other):
        os.utime(path, (long_ago, long_ago))
    os.utime(fresh, (time.time() + 60, time.time() + 60))  # being written by someone else right now

    atomic_write_bytes(str(target), b"complete")
    assert target.read_bytes() == b"complete"
    assert not stale.exists() and fresh.exists() and other.exists()


def test_long_file_names_get_a_short_temporary_name(tmp_path):
    target = tmp_path / ("x" * 240 + ".safetensors")
    prefix = temporary_prefix(target)
    assert len(prefix) < 60
    atomic_write_bytes(str(target), b"data")
    assert target.read_bytes() == b"data"
    stale = tmp_path / (prefix + "old.tmp")
    stale.write_bytes(b"")
    os.utime(stale, (0, 0))
    assert remove_stale_temporaries(str(target), time.time()) == [str(stale)]


def test_save_weights_goes_through_the_atomic_writer(tmp_path, monkeypatch, tiny_sd):
    text_encoder, unet = tiny_sd
    network = lora.create_network(1.0, 4, 1, None, text_encoder, unet)
    written = []
    real = io.atomic_write_bytes
    monkeypatch.setattr(io, "atomic_write_bytes", lambda path, data, **options: (written.append(path), real(path, data, **options)))
    for name in ("a.safetensors", "b.pt", "c.ckpt"):
        network.save_weights(str(tmp_path / name), torch.float16, {})
    assert [os.path.basename(p) for p in written] == ["a.safetensors", "b.pt", "c.ckpt"]


# Ways of writing a file that bypass lr_weights.files.io.atomic_write_bytes.
_BYPASSES = [
    re.compile(r"""\bopen\([^)]*,\s*(mode\s*=\s*)?["'][^"']*[wax+]"""),
    re.compile(r"\.write_(text|bytes)\("),
    re.compile(r"\bsave_file\("),
    re.compile(r"\btorch\.save\((?![^,]*buffer)"),
    re.compile(r"\.savefig\(\s*(?!buffer)"),
    re.compile(r"\bos\.(fdopen|open)\("),
    re.compile(r"\bshutil\.(copy|copyfile|copy2|move)\("),
]


def test_no_writer_bypasses_the_atomic_writer():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "files" / "io.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            code = line.split("#", 1)[0]
            if "os.devnull" in code:  # discarding output is not writing a file
                continue
            if any(pattern.search(code) for pattern in _BYPASSES):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not offenders, "write files through lr_weights.files.io.atomic_write_bytes:\n" + "\n".join(offenders)
