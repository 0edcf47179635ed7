"""Admission and limits (docs/protocol.md, "Rate and connection limits").

The connection caps, overall and per address: a connection over a cap is
refused with ``server_busy`` before anything is read
(:meth:`~securechat.server.transport.Peer.refuse`). A refused connection
lingers briefly so its peer reads the error, but only so many at once: past
``MAX_LINGERING_REFUSALS`` a flood is closed at once. And the token bucket
behind each connection's frame and lookup rates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .transport import Peer

MAX_LINGERING_REFUSALS: Final = 256
# A connection's room_create and room_append, each a signature check (docs/protocol.md 11.8).
ROOM_CHANGE_RATE: Final = 10.0
ROOM_CHANGE_BURST: Final = 20.0


class Admission:
    """The admitted connections, counted per address, and the refused ones still lingering."""

    def __init__(self, max_connections: int, max_per_ip: int) -> None:
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.sessions: set[Peer] = set()  # admitted and not yet closed
        self.refused: set[Peer] = set()  # refused and still lingering
        self.closing = False  # the server is shutting down: refuse everyone
        self._per_ip: dict[str, int] = {}

    def admit(self, peer: Peer) -> bool:
        """Count ``peer`` in, or return False when a cap (or shutdown) says no."""
        ip = peer.ip
        if self.closing or len(self.sessions) >= self.max_connections or self._per_ip.get(ip, 0) >= self.max_per_ip:
            return False
        self.sessions.add(peer)
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        return True

    def hold_refused(self, peer: Peer) -> bool:
        """May the refused ``peer`` linger? Not during a flood of refusals."""
        if len(self.refused) >= MAX_LINGERING_REFUSALS:
            return False
        self.refused.add(peer)
        return True

    def leave(self, peer: Peer) -> bool:
        """``peer``'s socket closed; True if it had been admitted."""
        if peer in self.refused:
            self.refused.discard(peer)
            return False
        if peer not in self.sessions:
            return False
        self.sessions.discard(peer)
        left = self._per_ip.get(peer.ip, 1) - 1
        if left > 0:
            self._per_ip[peer.ip] = left
        else:
            self._per_ip.pop(peer.ip, None)
        return True


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; :meth:`take` spends some if they are there."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, count: float = 1.0) -> bool:
        """Spend ``count`` tokens if the bucket holds them (a room message to many members costs more)."""
        # Callers may pass an earlier ``now`` than the last one (a read's decode time after a fresh clock
        # reading): time never runs backwards here, or a high rate would drain the bucket.
        if now > self.stamp:
            tokens = min(self.tokens + (now - self.stamp) * self.rate, self.burst)
            self.stamp = now
        else:
            tokens = self.tokens
        if tokens < count:
            self.tokens = tokens
            return False
        self.tokens = tokens - count
        return True
