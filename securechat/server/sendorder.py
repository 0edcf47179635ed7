"""SendOrder: one session's sends stay in order across a failure of the shared store.

Sends are pipelined: each is submitted to the store as it comes, and the store
applies them in call order (docs/architecture.md). When Redis goes away, the
link fails every command not yet answered at once, so every send submitted
before the failure fails with it; but a send that comes after could reach a
reconnected Redis before the client's retry of the failed one, and the
recipient would see them swapped. So from the first failure on, the session
refuses every other send with ``internal`` until the client sends the failed
one again (docs/protocol.md, "Several nodes"); the client resends its whole
outbox, oldest first, after such an error.

The failure is seen on the store's future itself, which the link fails
synchronously: a send handled after the failure always sees it, however late
the session's pipeline gets to the error it answers.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, TypeVar

Key = tuple[str, str]  # (recipient, message id)
T = TypeVar("T")


class SendOrder:
    """The sends of one session still being stored, and the first one that failed."""

    __slots__ = ("_held", "_stored")

    def __init__(self) -> None:
        self._stored: collections.deque[tuple[Key, asyncio.Future[Any]]] = collections.deque()
        self._held: Key | None = None

    def admit(self, key: Key) -> bool:
        """True if the send ``key`` may be stored now; False: refuse it, an earlier one must come first."""
        stored = self._stored
        while stored and stored[0][1].done():
            earlier, fut = stored.popleft()
            if fut.cancelled() or fut.exception() is not None:
                self.failed(earlier)
                stored.clear()  # submitted with it: failed with it
        if self._held is None:
            return True
        if self._held == key:
            self._held = None
            return True
        return False

    def track(self, key: Key, stored: asyncio.Future[T]) -> asyncio.Future[T]:
        """``stored`` is the store's answer for the send ``key`` (admitted just now); returns it."""
        self._stored.append((key, stored))
        return stored

    def failed(self, key: Key) -> None:
        """The send ``key`` failed for want of the store (unless an earlier one did already)."""
        if self._held is None:
            self._held = key

    @property
    def held(self) -> Key | None:
        return self._held
