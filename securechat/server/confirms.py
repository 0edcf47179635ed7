"""Confirmations: the deletes a node owes Redis, batched per loop turn and sent until Redis takes them.

A recipient's ``received`` deletes the message from its queue and, in the same
script, publishes ``delivered`` to its sender. If Redis does not take it (the
connection broke), nothing would ever send it again while the session lasts:
the message would stay queued and its sender would wait for ``delivered``. So
a confirmation that failed is sent again after a pause, until Redis takes it;
the script is idempotent (a message already deleted is skipped, and its ack
was published then).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Final

from .redisstore import Confirmed

log = logging.getLogger("securechat.server")

RETRY_AFTER: Final = 0.5  # the link answers at once while Redis is out of reach: no need to hurry


class Confirmations:
    """Confirmed messages per recipient, sent to ``confirm(recipient, items)`` once per loop turn."""

    def __init__(self, confirm: Callable[[str, list[Confirmed]], asyncio.Future[int]]) -> None:
        self._confirm = confirm
        self._pending: dict[str, list[Confirmed]] = {}

    def add(self, recipient: str, item: Confirmed, *, delay: float = 0.0) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_later(delay, self.flush)
        self._pending.setdefault(recipient, []).append(item)

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for recipient, items in pending.items():
            try:
                sent = self._confirm(recipient, items)
            except RuntimeError:  # the store is closed: the next session gets them again
                return
            sent.add_done_callback(functools.partial(self._taken, recipient, items))

    def _taken(self, recipient: str, items: list[Confirmed], fut: asyncio.Future[int]) -> None:
        if fut.cancelled() or fut.exception() is None:
            return
        log.debug("could not delete %d confirmed messages of %s (sent again): %s", len(items), recipient, fut.exception())
        for item in items:
            self.add(recipient, item, delay=RETRY_AFTER)
