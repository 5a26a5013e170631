"""A small TOML writer for flat sd-scripts config files (no dependency; tests parse it with tomllib).

sd-scripts' `--config_file` reads a flat table (sections are flattened), so flat is all we write:
strings, booleans, integers, finite floats and lists of those.
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Mapping, Sequence, Union

Scalar = Union[str, bool, int, float]
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _string(text: str) -> str:
    out = ['"']
    for char in text:
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def toml_value(value: Union[Scalar, Sequence[Scalar]]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML cannot hold the number {value!r}")
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def dumps(table: Mapping[str, Union[Scalar, Sequence[Scalar]]], header: Iterable[str] = ()) -> str:
    """`key = value` lines in the mapping's order, after `# ` comment lines from `header`."""
    lines = [("# " + line).rstrip() for line in header]
    lines += [f"{toml_key(key)} = {toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"
