"""Validation of ids that become object keys, and the random ids the runtime mints."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from ._errors import InvalidInstanceIdError

if TYPE_CHECKING:
    import random

__all__ = ["MAX_ID_BYTES", "IdSource", "validate_instance_id", "validate_key"]

# A file system allows 255 bytes per path component, and an id is one component of a
# key, or shares it with the longest suffix the runtime adds to one ("-terminal", after
# a memo prefix). Counted in UTF-8, as every store counts: "é" is two bytes.
MAX_ID_BYTES = 255 - len("-terminal")
# Characters that object stores, URLs or glob patterns give a meaning to.
_FORBIDDEN = frozenset('/\\*?[]#%"<>|{}^`')
# Any forbidden character or whitespace (``\s`` is ``str.isspace``): one search in C
# clears a good id, where the loop below asks three questions of every character.
_FORBIDDEN_OR_SPACE = re.compile("[\\s" + re.escape("".join(sorted(_FORBIDDEN))) + "]")


def validate_key(value: object, what: str = "instance id") -> str:
    """Return ``value`` if it can safely be one component of an object key.

    Refuses empty ids, ids over ``MAX_ID_BYTES`` in UTF-8, path separators, ``..``,
    whitespace, control characters and glob/URL metacharacters, with a message saying
    which rule broke.
    """
    if not isinstance(value, str):
        raise InvalidInstanceIdError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidInstanceIdError(f"{what} must not be empty")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_ID_BYTES:
        raise InvalidInstanceIdError(
            f"{what} is {size} bytes long in UTF-8 ({len(value)} characters); the limit "
            f"is {MAX_ID_BYTES} bytes"
        )
    if ".." in value or value == ".":
        raise InvalidInstanceIdError(f"{what} {value!r} contains '..' or is '.'")
    if value.startswith("."):
        raise InvalidInstanceIdError(f"{what} {value!r} must not start with '.'")
    if value.isprintable() and _FORBIDDEN_OR_SPACE.search(value) is None:
        return value
    for char in value:
        if char in _FORBIDDEN or not char.isprintable() or char.isspace():
            raise InvalidInstanceIdError(
                f"{what} {value!r} contains {char!r}, which is not allowed: ids become "
                "object-store keys (use letters, digits and -_.:@+=,~)"
            )
    return value


def validate_instance_id(value: object) -> str:
    """Return ``value`` if it is a valid instance id; raise ``InvalidInstanceIdError``."""
    return validate_key(value, "instance id")


class IdSource:
    """Where the runtime's random ids come from: run ids (which seed a run's
    ``ctx.random()``), inbox message ids and generated instance ids.

    Operating-system randomness by default; a seeded ``random.Random`` makes every id,
    and so a whole simulated run, reproducible.
    """

    __slots__ = ("_last_ns", "_rng")

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng
        self._last_ns = 0

    def _hex(self, size: int) -> str:
        return (os.urandom(size) if self._rng is None else self._rng.randbytes(size)).hex()

    def run_id(self) -> str:
        """A random id for one run of an instance."""
        return self._hex(12)

    def instance_id(self) -> str:
        """An instance id for a start that named none."""
        return self._hex(16)

    def message_id(self, now_ns: int) -> str:
        """An inbox message id that sorts by the time it was sent.

        The ids one source mints strictly increase, so messages sent back to back (in
        one clock tick, or on a MockClock standing still) keep their order in the inbox.
        """
        now_ns = self._last_ns = max(now_ns, self._last_ns + 1)
        return f"{now_ns:020d}-{self._hex(6)}"
