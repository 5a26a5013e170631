"""Logging that shows up in every sd-scripts era.

Newer sd-scripts configure handlers on the root logger; the GUI-era trainer (v0.6.5) prints and
configures none, so INFO records of a library vanish there. When nothing is configured at the time
we first log, we give our own logger a stderr handler; otherwise records propagate as usual.
"""

from __future__ import annotations

import logging
import sys

PACKAGE_LOGGER = "lr_weights"


class _FallbackHandler(logging.StreamHandler):
    """Marks the handler we add, so that we add it only once."""


def ensure_visible() -> None:
    """Make INFO records of lr_weights visible when the host configured no logging at all."""
    package = logging.getLogger(PACKAGE_LOGGER)
    if logging.getLogger().handlers or any(isinstance(h, _FallbackHandler) for h in package.handlers):
        return
    handler = _FallbackHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    package.addHandler(handler)
    if package.level == logging.NOTSET:
        package.setLevel(logging.INFO)
