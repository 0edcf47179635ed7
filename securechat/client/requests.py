"""Requests waiting for their answer, matched by ``rid`` (docs/protocol.md section 2).

The server copies a request's ``rid`` into its answer or ``error``. A server that
does not echo it still gets its answer matched: to the oldest waiting request of
the same kind (and name).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import RequestUnanswered, ServerErrorReply
from .link import Link


@dataclass
class _Pending:
    kind: str
    name: str | None
    future: asyncio.Future[Any]


class PendingRequests:
    """The requests of one session that wait for an answer."""

    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}
        self._rids = itertools.count(1)

    def new_rid(self, kind: str) -> str:
        return f"{kind}-{next(self._rids)}"

    async def ask(
        self, link: Link, frame: Mapping[str, Any], kind: str, name: str | None, timeout: float
    ) -> Any:
        """Send ``frame`` with a fresh ``rid`` and wait for its answer (or its ``error``, raised)."""
        rid = self.new_rid(kind)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = _Pending(kind, name, future)
        try:
            link.send({**frame, "rid": rid})
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise RequestUnanswered(f"the server did not answer '{kind}' within {timeout:g} s") from None
        finally:
            self._pending.pop(rid, None)

    def answer(self, answer: object, rid: str | None, kind: str, name: str | None) -> None:
        pending = self._pending.get(rid) if rid is not None else None
        if pending is None or pending.kind != kind:
            pending = next(
                (
                    p
                    for p in self._pending.values()
                    if p.kind == kind and p.name == name and not p.future.done()
                ),
                None,
            )
        if pending is not None and not pending.future.done():
            pending.future.set_result(answer)

    def fail(self, error: ServerErrorReply) -> bool:
        """Raise ``error`` in the request it answers; True if there was one still waiting."""
        pending = self._pending.get(error.rid) if error.rid is not None else None
        if pending is None or pending.future.done():
            return False
        pending.future.set_exception(error)
        return True

    def connection_lost(self) -> None:
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(RequestUnanswered("the connection to the server was lost"))
