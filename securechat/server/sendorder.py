"""SendOrder: one session's sends stay in order across a failure of the shared store.

Sends are pipelined: each is submitted to the store as it comes, and the store
applies them in call order (docs/architecture.md). When Redis goes away, the
link fails every command not yet answered at once, so every send submitted
before the failure fails with it; but a send that comes after could reach a
reconnected Redis before the client's retry of the failed one, and the
recipient would see them swapped. So from the first failure on, the session
refuses every other send with ``internal`` until one of the failed ones comes
again (docs/protocol.md, "Several nodes"): the client, after such an error,
resends its whole outbox oldest first, so its resend has begun and what follows
comes in order. A send refused meanwhile is held as a failed one is: the
client resends it as well. A send whose command failed may still have been
stored (the reply was lost with the connection), or stored by another copy of
it: once the node sees it stored or confirmed (an ack heard by pub/sub or
recovered from the store after a gap), it stops waiting for it, as the client
will not send it again; the hold lasts while a refused send has not
come again, so a send in flight behind the refused ones is not stored ahead
of their resend. A hold that the client does not lift within
:data:`HOLD_LIMIT` seconds is dropped (one log line): order is then no longer
promised, but a session never stays stuck.

The failure is seen on the store's future itself, which the link fails
synchronously: a send handled after the failure always sees it, however late
the session's pipeline gets to the error it answers.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

log = logging.getLogger("securechat.server")

HOLD_LIMIT: Final = 10.0

Key = tuple[str, str]  # (recipient, message id); a room message's: (room, message id)
T = TypeVar("T")
# What :meth:`SendOrder.admit` holds when a store call fails: the keys of the sends it answered.
Keys = Callable[[], Sequence[Key]]

# What a send refused by :meth:`SendOrder.admit` is answered (the client then resends its outbox in order).
HELD: Final = ("internal", "an earlier send failed: it must come again first")


class SendOrder:
    """The sends of one session still being stored, and the ones that failed."""

    __slots__ = ("_acked", "_held", "_keys", "_since", "_stored")

    def __init__(self) -> None:
        self._stored: collections.deque[tuple[Key | Keys, asyncio.Future[Any]]] = collections.deque()
        self._keys: set[Key] = set()  # the keys in ``_stored``
        self._held: set[Key] = set()  # failed or refused, not stored since: the client's resend starts with one
        self._acked: set[Key] = set()  # sends still in ``_stored`` stored by another copy meanwhile
        self._since = 0.0  # when the hold began

    def admit(self, key: Key) -> bool:
        """True if the send ``key`` may be stored now; False: refuse it, an earlier one must come first."""
        stored = self._stored
        while stored and stored[0][1].done():
            earlier, fut = stored.popleft()
            failed = fut.cancelled() or fut.exception() is not None
            if callable(earlier):  # sends that joined one call (track_joined): none was acked before its answer
                for one in earlier() if failed else ():
                    self.failed(one)
                continue
            self._keys.discard(earlier)
            if failed and earlier not in self._acked:
                self.failed(earlier)
            self._acked.discard(earlier)
        if not self._held:
            return True
        if key in self._held:  # the client's resend has begun: it comes oldest first
            self._held.clear()
            return True
        if time.monotonic() - self._since > HOLD_LIMIT:
            log.warning("%d failed or refused sends did not come again within %.0f s: no longer waiting", len(self._held), HOLD_LIMIT)
            self._held.clear()
            return True
        # Refused: the client resends it too, and what it sent after must wait for it as well. Were only
        # the failed sends held, a hold emptied by :meth:`settled` (all of them stored after all) would let
        # a send still in flight behind this one through ahead of its resend.
        self._held.add(key)
        return False

    def track(self, key: Key, stored: asyncio.Future[T]) -> asyncio.Future[T]:
        """``stored`` is the store's answer for the send ``key`` (admitted just now); returns it."""
        self._stored.append((key, stored))
        self._keys.add(key)
        return stored

    def track_joined(self, keys: Keys, stored: asyncio.Future[Any]) -> None:
        """``stored`` answers every send that joined one call (a live publish, which more sends may still
        join): ``keys`` reads their keys, should it fail. One entry for them all: an entry per live send cost
        the pair some 1.1-1.25x CPU per cross-node message (docs/performance.md, round 8). None of them can
        be acked before ``stored`` is answered, so :meth:`settled` need not know them."""
        self._stored.append((keys, stored))

    def failed(self, key: Key) -> None:
        """The send ``key`` failed for want of the store."""
        if not self._held:
            self._since = time.monotonic()
        self._held.add(key)

    def settled(self, key: Key) -> None:
        """The send ``key`` is stored after all: another copy of it was, or its recipient confirmed it."""
        self._held.discard(key)
        if key in self._keys:
            self._acked.add(key)

    @property
    def held(self) -> bool:
        return bool(self._held)
