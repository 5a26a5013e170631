"""One network_args value -> one checked Python value: the scalar parsers every other args module uses.

Hosts pass every value as a string (newer ones inject `dropout` as a float or None); direct callers
may pass numbers. Each parser raises a NetworkArgError naming the key, the value and what is valid.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from lr_weights.errors import NetworkArgError

FLAG_WORDS = "1 or 0 (also true/false, yes/no, on/off)"


def parse_float(key: str, text: Any, *, what: str = "a number") -> float:
    """float(text) that refuses non-numbers and non-finite values with a message naming the key."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise NetworkArgError(key, text, what) from None
    if not math.isfinite(value):
        raise NetworkArgError(key, text, f"{what} (finite; nan and inf are not allowed)")
    return value


def parse_int(key: str, value: Any, *, minimum: Optional[int] = 0) -> int:
    """A whole number >= `minimum` (None: any whole number)."""
    what = "a whole number" if minimum is None else f"a whole number >= {minimum}"
    text = str(value).strip()
    try:
        number = int(text)
    except ValueError:
        raise NetworkArgError(key, value, what) from None
    if minimum is not None and number < minimum:
        raise NetworkArgError(key, value, what)
    return number


def parse_alpha(key: str, value: Any) -> float:
    alpha = parse_float(key, str(value).strip(), what="a number >= 0 (0 means alpha = dim)")
    if alpha < 0:
        raise NetworkArgError(key, value, "a number >= 0 (0 means alpha = dim)")
    return alpha


def parse_probability(key: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in ("", "none"):
        return None
    p = parse_float(key, str(value).strip(), what="a probability 0 <= p < 1")
    if not 0.0 <= p < 1.0:
        raise NetworkArgError(key, value, "a probability 0 <= p < 1")
    return p


def parse_flag(key: str, value: Any, valid: str = FLAG_WORDS) -> bool:
    """On for 1/true/yes/on, off for 0/false/no/off/empty/none (any case); `valid` is how the error spells it."""
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", "", "none"):
        return False
    raise NetworkArgError(key, value, valid)


def parse_upstream_flag(key: str, value: Any) -> bool:
    """Upstream lora_flux turns a flag on only for the exact string "True" (so "true" and "1" silently
    meant off); we take True/true/1/yes/on as on and refuse anything that is not a clear yes or no."""
    return parse_flag(key, value, valid="True or False")


def parse_ratio(key: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    ratio = parse_float(key, str(value).strip(), what="a positive number")
    if ratio <= 0:
        raise NetworkArgError(key, value, "a positive number")
    return ratio


def parse_learning_rate(key: str, value: Any) -> Optional[float]:
    """A learning rate >= 0, or None when not given (a negative one would train away from the data;
    torch's optimizers refuse it only when they are built, after the model is loaded)."""
    if value is None:
        return None
    lr = parse_float(key, str(value).strip(), what="a learning rate >= 0")
    if lr < 0:
        raise NetworkArgError(key, value, "a learning rate >= 0")
    return lr
