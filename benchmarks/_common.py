"""Shared by the benchmarks: the upstream import, timing and a plain table. Not part of the package."""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
import types
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
SKELETONS = REPO / "tests" / "fixtures" / "upstream" / "skeletons"
sys.path.insert(0, str(REPO))


def setup_threads() -> int:
    import torch

    threads = int(os.environ.get("BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    return threads


def import_upstream(module: str):
    """sd-scripts' `networks.<module>` from $SD_SCRIPTS_DIR, or (None, reason).

    Its `library` package is imported for real when it can be; otherwise the two names the network
    modules take from it (`library.utils.setup_logging`, `library.sdxl_original_unet.
    SdxlUNet2DConditionModel`) are stubbed, which changes nothing for SD1.x models.
    """
    root = os.environ.get("SD_SCRIPTS_DIR")
    if not root:
        return None, "SD_SCRIPTS_DIR is not set"
    if root not in sys.path:
        sys.path.insert(0, root)
    import importlib

    try:
        imported = importlib.import_module(f"networks.{module}")
        stubbed = getattr(sys.modules.get("library"), "is_benchmark_stub", False)  # an earlier call stubbed it
        return imported, f"{root}/networks/{module}.py with library.* stubbed by an earlier import" if stubbed else f"real sd-scripts library from {root}"
    except ImportError as error:
        first_error = error
    for name in [n for n in sys.modules if n == "library" or n.startswith("library.") or n.startswith("networks")]:
        del sys.modules[name]
    library = types.ModuleType("library")
    library.__path__ = []
    library.is_benchmark_stub = True
    utils = types.ModuleType("library.utils")
    utils.setup_logging = lambda *args, **kwargs: None
    sdxl = types.ModuleType("library.sdxl_original_unet")
    sdxl.SdxlUNet2DConditionModel = type("SdxlUNet2DConditionModel", (), {})
    sys.modules.update({"library": library, "library.utils": utils, "library.sdxl_original_unet": sdxl})
    try:
        return importlib.import_module(f"networks.{module}"), f"{root}/networks/{module}.py with library.* stubbed ({first_error})"
    except ImportError as error:
        return None, f"cannot import networks.{module} from {root}: {error}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


class RssPeak:
    """Peak resident set size while active, sampled every 2 ms (CPU runs)."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        self.start = self.now()
        self.peak = self.start
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.now())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())

    @property
    def delta(self) -> int:
        return self.peak - self.start


def table(headers: Sequence[str], rows: List[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> str:
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return f"{device}; torch {torch.__version__}; python {platform.python_version()}"
