"""Helpers shared by the lr-weights subcommands: options, optional dependencies, captured logs, plots."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from lr_weights.archs.blocks import Architecture
from lr_weights.errors import NetworkArgError

ARCH_CHOICES = ("sd", "sd1", "sd2", "sdxl", "flux")


def add_subcommand(subparsers, name: str, help_text: str, doc: str, examples: str):
    """A subcommand parser whose --help shows the module's docstring and its examples."""
    import argparse

    parser = subparsers.add_parser(
        name, help=help_text, description=doc, epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # An error found while running (not while parsing) still shows this subcommand's usage.
    parser.set_defaults(usage=parser.format_usage)
    return parser


def architecture(name: str) -> Architecture:
    """sd, sd1 and sd2 share the block layout; sdxl and flux have their own (lr_weights/archs/)."""
    from lr_weights.archs import get_architecture

    return get_architecture(name)


def parse_pairs(pairs: Sequence[str], option: str) -> Dict[str, str]:
    """KEY=VALUE strings (as sd-scripts' --network_args) -> dict; split on the first '='."""
    result: Dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise NetworkArgError(option, pair, "KEY=VALUE")
        key, value = pair.split("=", 1)
        result[key.strip()] = value
    return result


def optional_import(module: str, extra: str, purpose: str) -> Any:
    """Import an optional dependency, or fail with one line saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"{purpose} needs {module.split('.')[0]}: pip install 'lr-weights[{extra}]'") from None


def read_toml(path: str) -> Dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        tomllib = optional_import("tomli", "test", "reading TOML on Python < 3.11")
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError:
        raise
    except Exception as error:
        raise ValueError(f"{path} is not valid TOML ({error})") from None


def read_json(path: str) -> Any:
    import json

    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text (JSON) file") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON (line {error.lineno}: {error.msg})") from None


class _ListHandler(logging.Handler):
    def __init__(self, level: int):
        super().__init__(level)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def captured_logs(level: int = logging.WARNING) -> Iterator[List[str]]:
    """Collect what lr_weights logs at `level` or above, instead of printing it; yields the messages."""
    logger = logging.getLogger("lr_weights")
    handler = _ListHandler(level)
    messages: List[str] = []
    saved = (logger.propagate, logger.level, list(logger.handlers))
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(min(level, logging.INFO))
    try:
        yield messages
    finally:
        logger.propagate, _, logger.handlers = saved[0], saved[1], saved[2]
        logger.setLevel(saved[1])
        messages.extend(record.getMessage() for record in handler.records if record.levelno >= level)


def progress(iterable: Iterable, total: Optional[int], description: str, enabled: bool = True, unit: str = "module") -> Iterable:
    """tqdm on stderr when it is installed and stderr is a terminal; the plain iterable otherwise."""
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=description, unit=unit, disable=None, leave=False, file=sys.stderr)


def single_thread() -> None:
    """Per-module work here is small matrix products: one thread is fastest, and on a busy machine
    OpenMP threads spinning against each other make them tens of times slower."""
    import torch

    torch.set_num_threads(1)


def parse_size(text: str) -> Tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise NetworkArgError("--plot-size", text, "WIDTHxHEIGHT in pixels, e.g. 1000x400") from None
    if not (100 <= width <= 10000 and 100 <= height <= 10000):
        raise NetworkArgError("--plot-size", text, "WIDTHxHEIGHT, each between 100 and 10000 pixels")
    return width, height


# How a bar is drawn by what its block does: trained blocks in colour, the others unmistakably not.
BAR_STYLES = {
    "train": {"facecolor": "tab:blue", "edgecolor": "tab:blue"},
    "pruned": {"facecolor": "white", "edgecolor": "tab:red", "hatch": "xx"},
    "no modules": {"facecolor": "lightgrey", "edgecolor": "grey", "hatch": "//"},
}


def save_bar_chart(
    path: str,
    labels: Sequence[str],
    series: Sequence[Tuple[str, Sequence[float]]],
    title: str,
    ylabel: str,
    size: Tuple[int, int],
    line: bool = False,
    xlabel: str = "block",
    kinds: Optional[Sequence[str]] = None,
) -> None:
    """A PNG of exactly `size` pixels: one bar (or line) series per entry, one tick per label.

    `kinds` (one of BAR_STYLES' keys per label) draws a single bar series by what each block
    does, with a legend; a block with no bar height (pruned, or no modules) still gets a
    visible stub so it is not mistaken for a missing value.
    """
    optional_import("matplotlib", "plot", "--plot")
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from lr_weights.files.io import atomic_write_bytes

    dpi = 100
    figure = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    positions = list(range(len(labels)))
    width = 0.8 / max(1, len(series))
    for n, (name, values) in enumerate(series):
        if line:
            axes.plot(positions, values, marker="o", label=name)
        elif kinds is not None:
            tallest = max([abs(v) for v in values] + [1e-12])
            for position, value, kind in zip(positions, values, kinds):
                height = value if kind == "train" else max(value, 0.04 * tallest)
                axes.bar(position, height, width=width, linewidth=1, **BAR_STYLES[kind])
        else:
            axes.bar([p + (n - (len(series) - 1) / 2) * width for p in positions], values, width=width, label=name)
    axes.set_xticks(positions)
    axes.set_xticklabels(labels, rotation=90, fontsize=8)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    if kinds is not None:
        shown = [k for k in BAR_STYLES if k in set(kinds)]
        axes.legend(handles=[Patch(label=k, linewidth=1, **BAR_STYLES[k]) for k in shown], loc="upper left", fontsize=8)
    elif len(series) > 1:
        axes.legend()
    figure.subplots_adjust(bottom=0.22, top=0.9, left=0.1, right=0.98)
    buffer = io.BytesIO()
    # A fixed date-free metadata set keeps the bytes the same from run to run.
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    atomic_write_bytes(os.fspath(path), buffer.getvalue())


def print_warnings(command: str, messages: Sequence[str]) -> None:
    for message in messages:
        print(f"lr-weights {command}: warning: {message}", file=sys.stderr)
