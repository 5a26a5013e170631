"""The `lr-weights` command: one subcommand per module in this package.

Each subcommand module has `register(subparsers)`, which adds its parser and sets `run` to a
function taking the parsed arguments and returning an exit code. Every verdict comes from the
network module's own parsers. Exit codes: 0 done; 1 the setting is valid but trains nothing
(TrainsNothingError); 2 bad input, which ends as the subcommand's usage and one line on stderr.
Building the parser imports no torch (the subcommand modules import the heavy parts inside
`run`), so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from typing import List, Optional

from lr_weights.errors import NetworkArgError, TrainsNothingError

SUBCOMMANDS = ("show", "plan", "gui", "inspect", "bake", "analyze", "demo")
# A value that starts with '-' but is no option: -1e-4, -0.5, -1,0,0,... (argparse takes only
# plain negative numbers such as -1 or -.5 as values).
_NEGATIVE_VALUE = re.compile(r"^-\.?\d")


def build_parser() -> argparse.ArgumentParser:
    from lr_weights import __version__

    parser = argparse.ArgumentParser(
        prog="lr-weights",
        description="Block-wise learning rates for sd-scripts LoRA training: try, plan, convert and inspect.",
    )
    parser.add_argument("--version", action="version", version=f"lr-weights {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def negative_values_joined(parser: argparse.ArgumentParser, argv: List[str]) -> List[str]:
    """`--unet-lr -1e-4` -> `--unet-lr=-1e-4`, for options of the subcommand that take one value,
    so a negative number or LBW vector is read as the value it is, not as an unknown option.
    (argparse has no public way to list a subparser's options; its `_actions` have been stable
    since Python 3.2.)"""
    if not argv or argv[0] not in SUBCOMMANDS:
        return list(argv)
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    takes_one = {
        option for action in subparsers.choices[argv[0]]._actions if action.option_strings and action.nargs in (None, 1)
        for option in action.option_strings
    }
    joined = [argv[0]]
    rest = iter(argv[1:])
    for token in rest:
        if token in takes_one:
            following = next(rest, None)
            if following is not None and _NEGATIVE_VALUE.match(following):
                joined.append(f"{token}={following}")
                continue
            joined.append(token)
            if following is not None:
                joined.append(following)
            continue
        joined.append(token)
    return joined


def describe_os_error(error: OSError) -> str:
    """One line for a file problem: what the path is, not errno's words."""
    if error.filename is None:
        return str(error)
    name = os.fspath(error.filename)
    if isinstance(error, FileNotFoundError):
        return f"{name} does not exist"
    if isinstance(error, IsADirectoryError):
        return f"{name} is a folder, not a file"
    return f"{name}: {error.strerror or error}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(negative_values_joined(parser, list(sys.argv[1:] if argv is None else argv)))
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
    except TrainsNothingError as error:
        print(f"lr-weights {args.command}: error: this setting trains nothing: {error}", file=sys.stderr)
        return 1
    except (NetworkArgError, ValueError, ImportError, OSError) as error:
        # ImportError: an optional dependency (lycoris-lora, matplotlib, ...); its message says how to install it.
        sys.stderr.write(args.usage())
        message = describe_os_error(error) if isinstance(error, OSError) else str(error)
        print(f"lr-weights {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lr-weights {args.command}: interrupted", file=sys.stderr)
        return 130
