"""ReplicaWait: a write counts as stored only once N replicas have it (``--redis-replicas N``).

Redis replicates asynchronously: after a failover, what the old primary
acknowledged and had not yet sent to a replica is gone. With ``--redis-replicas
N`` a node sends ``WAIT N timeout`` after the writes behind a ``queued`` ack (a
message stored, a room's copy), a registration and a room's log append
(``room_create``, ``room_append``: answered ``internal`` too), and answers the client only
once Redis says N replicas have everything the connection wrote before the
``WAIT``; if fewer took it within :data:`WAIT_MS` the write fails with
:class:`NotReplicated` (a :class:`RedisUnavailable`: the client is answered
``internal`` and resends, and the resend of a stored message is answered as a
resend, not stored twice). docs/deployment.md ("Redis") gives the cost.

One ``WAIT`` serves every write of a loop turn (group commit): it is submitted
on the next turn, after the link wrote the turn's commands, so it follows them
on the connection. ``WAIT`` holds the connection until it returns, so while a
replica is missing every turn with a write costs up to :data:`WAIT_MS`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final, TypeVar

from .futures import then
from .resp import RedisUnavailable

T = TypeVar("T")

log = logging.getLogger("securechat.server.redis")

WAIT_MS: Final = 1000  # well inside the link's 5 s command timeout


class NotReplicated(RedisUnavailable):
    """Fewer replicas than asked for acknowledged a write in time: it may be lost in a failover."""


class ReplicaWait:
    """Holds back writes' results until a ``WAIT`` submitted after them says ``replicas`` have them."""

    def __init__(self, call: Callable[..., asyncio.Future[Any]], replicas: int, timeout_ms: int = WAIT_MS) -> None:
        self._call = call
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self._turn: asyncio.Future[None] | None = None  # this loop turn's WAIT, done when enough replicas said so
        self.short = False  # the last WAIT found too few replicas

    def after(self, written: asyncio.Future[T]) -> asyncio.Future[T]:
        """``written``'s result, once ``replicas`` acknowledged it; at once if none are asked for."""
        if not self.replicas:
            return written
        if self._turn is None:
            loop = asyncio.get_running_loop()
            self._turn = loop.create_future()
            loop.call_soon(self._submit, self._turn)  # after the link's flush of this turn (scheduled before us)
        # The WAIT's reply follows the write's on the connection: the write is done when the turn is.
        return then(self._turn, lambda _: written.result())

    def _submit(self, turn: asyncio.Future[None]) -> None:
        self._turn = None
        try:
            waited = self._call("WAIT", self.replicas, self.timeout_ms)
        except RuntimeError as exc:  # the link is closed (shutdown)
            turn.set_exception(RedisUnavailable(str(exc)))
            return
        waited.add_done_callback(lambda w: self._settle(w, turn))

    def _settle(self, waited: asyncio.Future[Any], turn: asyncio.Future[None]) -> None:
        if waited.cancelled():
            turn.set_exception(RedisUnavailable("the WAIT for the replicas was cancelled"))
        elif (exc := waited.exception()) is not None:
            turn.set_exception(exc)  # Redis itself is away: the link says so
        elif (count := int(waited.result())) < self.replicas:
            short = f"{count} of {self.replicas} replicas acknowledged within {self.timeout_ms} ms"
            if not self.short:  # one line when it starts, one when it ends: not one per refused send
                log.error("%s: refusing sends ('internal') until enough do", short)
            self.short = True
            turn.set_exception(NotReplicated(short))
        else:
            if self.short:
                log.warning("%d replicas acknowledge again: sends are stored and acked", self.replicas)
            self.short = False
            turn.set_result(None)
