"""The one error type for bad user input: it names the argument, the value and what is valid."""

from __future__ import annotations


class NetworkArgError(ValueError):
    """A network argument (or CLI input) that cannot be used as given.

    A ValueError on purpose: sd-scripts retries `prepare_optimizer_params` on TypeError, and users
    catch ValueError; anything else escaping from our entry points is a bug.
    """

    def __init__(self, key: str, value: object, expected: str):
        self.key = key
        self.value = value
        self.expected = expected
        ending = "" if expected.endswith((".", "?", "!")) else "."
        super().__init__(f"{key}={value!r} is not valid: expected {expected}{ending}")


class TrainsNothingError(NetworkArgError):
    """Settings that are each valid but together train nothing (every block pruned, say).

    The CLI ends these with exit code 1 ("this setting trains nothing"), other bad input with 2.
    """
