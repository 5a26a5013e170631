"""Run `lr-weights` in-process and capture what it prints."""

import pytest
import torch

from lr_weights.cli import main


class Result:
    """`err` is what follows the subcommand's usage, which an error prints first (kept in `usage`)."""

    def __init__(self, code, out, err):
        self.code, self.out = code, out
        self.usage = ""
        if err.startswith("usage: "):
            marker = err.find("\nlr-weights ")
            if marker >= 0:
                self.usage, err = err[: marker + 1], err[marker + 1 :]
        self.err = err


@pytest.fixture
def cli(capsys):
    def run(*argv):
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def png_size(path):
    """(width, height) from a PNG's IHDR chunk; asserts the signature."""
    data = open(path, "rb").read(32)
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture
def lokr_file(tmp_path):
    """A LoKr over sd-scripts' SD1 module tree (factors on the CPU, layers on meta), w1 and w2 non-zero."""
    pytest.importorskip("lycoris.kohya", reason="lycoris-lora is an optional extra (pip install lycoris-lora)")
    from lr_weights import lycoris
    from lr_weights.models.reference import build_reference_model

    text_encoder, unet = build_reference_model("sd1")
    torch.manual_seed(0)
    network = lycoris.create_network(1.0, 4, 1.0, None, text_encoder, unet, algo="lokr", factor="8", preset="attn-only")
    with torch.no_grad():
        for p in network.parameters():
            p.normal_(0, 0.1)
    path = tmp_path / "lokr.safetensors"
    network.save_weights(str(path), None, {"ss_network_module": "lycoris.kohya"})
    return path
