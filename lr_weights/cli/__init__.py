"""The `lr-weights` command: one subcommand per module in this package.

Each subcommand module has `register(subparsers)`, which adds its parser and sets `run` to a
function taking the parsed arguments and returning an exit code. Errors from bad input end as the
subcommand's usage and one line on stderr, exit code 2. Building the parser imports no torch (the
subcommand modules import the heavy parts inside `run`), so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import List, Optional

from lr_weights.errors import NetworkArgError

SUBCOMMANDS = ("show", "plan", "gui", "inspect", "bake", "analyze", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lr-weights",
        description="Block-wise learning rates for sd-scripts LoRA training: try, plan, convert and inspect.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO, format="%(levelname)s %(message)s")
    try:
        code = int(args.run(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # `lr-weights plan ... | head`: the reader has all it wanted. Point stdout at devnull so
        # the interpreter's own flush at exit does not complain a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (NetworkArgError, ValueError, FileNotFoundError, OSError) as error:
        sys.stderr.write(args.usage())
        print(f"lr-weights {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lr-weights {args.command}: interrupted", file=sys.stderr)
        return 130
