"""Run an sd-scripts training script with some of its module constants overridden.

    python run_sd_scripts.py --patch-json '{"library.original_unet": {"BLOCK_OUT_CHANNELS": [32, 64, 64, 64]}}' \
        -- /path/to/sd-scripts/train_network.py --arg ...

sd-scripts builds its U-Nets from module-level constants (channel widths,
context/ADM dims) that are read when the model object is constructed.  We
import those modules first, overwrite the constants, then execute the
training script as ``__main__`` in this same process, so the trainer, the
model loading code and the network module are all the unmodified upstream /
package code.  The script's directory is put first on sys.path and used as
the working directory, exactly like ``python train_network.py`` from a
checkout.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import runpy
import sys
from typing import Callable, List, Tuple


def split_argv(argv: List[str], usage: str, add_options: Callable[[argparse.ArgumentParser], None]) -> Tuple[argparse.Namespace, str, List[str]]:
    """`OPTIONS -- SCRIPT ARGS...` -> (the wrapper's options, the script's absolute path, its args)."""
    if "--" not in argv:
        raise SystemExit(usage)
    sep = argv.index("--")
    ap = argparse.ArgumentParser()
    add_options(ap)
    opts = ap.parse_args(argv[:sep])
    return opts, os.path.abspath(argv[sep + 1]), argv[sep + 2 :]


def run_training_script(script: str, script_args: List[str], prepare: Callable[[], None]) -> None:
    """Run `script` as `python SCRIPT ARGS` from its checkout would, after `prepare()` (which may
    import sd-scripts' modules: the checkout is on sys.path and the working directory by then)."""
    sd_dir = os.path.dirname(script)
    os.chdir(sd_dir)
    sys.path.insert(0, sd_dir)
    prepare()

    # Record which file the network module resolves to (the harness checks it).
    if "--network_module" in script_args:
        name = script_args[script_args.index("--network_module") + 1]
        spec = importlib.util.find_spec(name)
        print(f"LRW_E2E_NETWORK_MODULE {name} -> {spec.origin if spec else None}", flush=True)

    sys.argv = [script, *script_args]
    runpy.run_path(script, run_name="__main__")


def main_with_tiny_config(runner: str, install: Callable[[dict], None]) -> None:
    """`runner --tiny-config JSON -- SCRIPT ARGS...`: `install(config)` (the config file's JSON,
    which the family's harness wrote), then the training script."""
    opts, script, script_args = split_argv(
        sys.argv[1:],
        f"usage: {runner} --tiny-config JSON -- SCRIPT [ARGS...]",
        lambda ap: ap.add_argument("--tiny-config", required=True),
    )
    with open(opts.tiny_config, encoding="utf-8") as handle:
        cfg = json.load(handle)
    run_training_script(script, script_args, lambda: install(cfg))


def patch_constants(patches: dict) -> None:
    for mod_name, consts in patches.items():
        mod = importlib.import_module(mod_name)
        for name, value in consts.items():
            if not hasattr(mod, name):
                raise SystemExit(f"{mod_name} has no constant {name}; sd-scripts layout changed?")
            if isinstance(getattr(mod, name), tuple) and isinstance(value, list):
                value = tuple(value)
            setattr(mod, name, value)


def main() -> None:
    opts, script, script_args = split_argv(
        sys.argv[1:],
        "usage: run_sd_scripts.py [--patch-json JSON] -- SCRIPT [ARGS...]",
        lambda ap: ap.add_argument("--patch-json", default="{}"),
    )
    run_training_script(script, script_args, lambda: patch_constants(json.loads(opts.patch_json)))


if __name__ == "__main__":
    main()
