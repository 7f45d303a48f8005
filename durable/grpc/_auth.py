"""Who may call the sidecar: the API token, and a limit on wrong guesses per peer.

Every call must carry the token in its ``dapr-api-token`` metadata when one is set.
A peer (an IP address) that fails :data:`MAX_FAILURES` times within :data:`WINDOW` is
refused without its token being looked at until the window has passed, so a token
cannot be guessed at network speed; its failures are logged once per window, not once
per call. Time is the sidecar's clock.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from grpclib import GRPCError, Status

if TYPE_CHECKING:
    from grpclib.server import Stream

    from durable._clock import Clock

__all__ = ["MAX_FAILURES", "WINDOW", "Gate", "check_token"]

log = logging.getLogger("durable.grpc.auth")

MAX_FAILURES = 10
"""Failed calls a peer may make within :data:`WINDOW` before it is refused outright."""
WINDOW = timedelta(minutes=1)
_LOCKED = "too many failed attempts from this address: try again later"
_PEERS_KEPT = 10_000  # peers with recent failures remembered at most


def check_token(token: str | None) -> str | None:
    """``token``, refused when empty: an unset shell variable must not turn
    authentication off without a word."""
    if token is not None and not token.strip():
        raise ValueError("the API token is empty: give a token, or none to run without one")
    return token


@dataclass
class _Failures:
    since: datetime
    count: int = 0


class Gate:
    """Checks each call's token; counts and limits failures per peer."""

    def __init__(self, token: str | None, clock: Clock) -> None:
        checked = check_token(token)
        self._token = checked.encode() if checked else None
        self._clock = clock
        self._failures: dict[str, _Failures] = {}

    def check(self, stream: Stream[Any, Any]) -> None:
        """Raise UNAUTHENTICATED unless the call carries the token (or none is set)."""
        if self._token is None:
            return
        peer = _host(stream)
        now = self._clock.now()
        failures = self._failures.get(peer)
        if failures is not None and now - failures.since >= WINDOW:
            del self._failures[peer]
            failures = None
        if failures is not None and failures.count >= MAX_FAILURES:
            raise GRPCError(Status.UNAUTHENTICATED, _LOCKED)
        sent = stream.metadata.get("dapr-api-token") if stream.metadata else None
        given = sent.encode() if isinstance(sent, str) else b""
        if hmac.compare_digest(given, self._token):
            return
        if failures is None:
            if len(self._failures) >= _PEERS_KEPT:
                del self._failures[next(iter(self._failures))]
            failures = self._failures[peer] = _Failures(now)
            log.warning("refused a call from %s: missing or wrong dapr-api-token", peer)
        failures.count += 1
        if failures.count == MAX_FAILURES:
            log.warning("%s failed %d times within %s: refused until the window passes",
                        peer, MAX_FAILURES, WINDOW)  # fmt: skip
        raise GRPCError(Status.UNAUTHENTICATED, "missing or wrong dapr-api-token")


def _host(stream: Stream[Any, Any]) -> str:
    """The calling peer's IP address ("?" if the transport has none)."""
    addr = stream.peer.addr()
    return str(addr[0]) if addr else "?"
