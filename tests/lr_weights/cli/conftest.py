"""Run `lr-weights` in-process and capture what it prints."""

import pytest

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
