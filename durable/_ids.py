"""Validation of ids that become object keys, and the random ids the runtime mints."""

from __future__ import annotations

import os

from ._errors import InvalidInstanceIdError

__all__ = ["MAX_ID_LENGTH", "new_message_id", "new_run_id", "validate_instance_id", "validate_key"]

MAX_ID_LENGTH = 256
# Characters that object stores, URLs or glob patterns give a meaning to.
_FORBIDDEN = frozenset('/\\*?[]#%"<>|{}^`')


def validate_key(value: object, what: str = "instance id") -> str:
    """Return ``value`` if it can safely be one component of an object key.

    Refuses empty or over-long ids, path separators, ``..``, whitespace, control
    characters and glob/URL metacharacters, with a message saying which rule broke.
    """
    if not isinstance(value, str):
        raise InvalidInstanceIdError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidInstanceIdError(f"{what} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInstanceIdError(
            f"{what} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}"
        )
    if ".." in value or value == ".":
        raise InvalidInstanceIdError(f"{what} {value!r} contains '..' or is '.'")
    if value.startswith("."):
        raise InvalidInstanceIdError(f"{what} {value!r} must not start with '.'")
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


def new_run_id() -> str:
    """A random id for one run of an instance (seeds its replay-safe randomness)."""
    return os.urandom(12).hex()


def new_message_id(now_ns: int) -> str:
    """An inbox message id that sorts by the time it was sent, then at random."""
    return f"{now_ns:020d}-{os.urandom(6).hex()}"
