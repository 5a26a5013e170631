"""Load sd-scripts' own `networks/dylora.py` from a checkout at run time, as a test oracle.

Nothing is copied: the file is executed from `SD_SCRIPTS_DIR`. Its sd-scripts imports (`library.utils`
for logging, `library.train_util` for hashes on save) are replaced by small stand-ins, so the oracle
needs neither sd-scripts' dependencies (torchvision, ...) nor its `library` package. Each call
executes the file afresh: upstream appends conv targets to a class-level list, which would leak from
one network into the next.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Optional


def sd_scripts_dir() -> Optional[Path]:
    folder = os.environ.get("SD_SCRIPTS_DIR")
    if not folder or not (Path(folder) / "networks" / "dylora.py").is_file():
        return None
    return Path(folder)


def _stub_library() -> None:
    if "library.utils" in sys.modules and getattr(sys.modules["library.utils"], "_lr_weights_stub", False):
        return
    library = types.ModuleType("library")
    utils = types.ModuleType("library.utils")
    utils.setup_logging = lambda *args, **kwargs: None
    utils._lr_weights_stub = True
    train_util = types.ModuleType("library.train_util")
    train_util.precalculate_safetensors_hashes = lambda state_dict, metadata: ("", "")
    library.utils = utils
    library.train_util = train_util
    sys.modules.update({"library": library, "library.utils": utils, "library.train_util": train_util})


_COUNTER = [0]


def load_upstream_dylora(folder: Optional[Path] = None) -> types.ModuleType:
    """A fresh module object of upstream `networks/dylora.py`."""
    folder = folder or sd_scripts_dir()
    if folder is None:
        raise RuntimeError("SD_SCRIPTS_DIR is not set to an sd-scripts checkout")
    saved = {k: sys.modules.get(k) for k in ("library", "library.utils", "library.train_util")}
    _stub_library()
    try:
        _COUNTER[0] += 1
        spec = importlib.util.spec_from_file_location(f"_upstream_dylora_{_COUNTER[0]}", Path(folder) / "networks" / "dylora.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
