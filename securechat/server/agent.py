"""The agent port: one line for the load balancer saying whether this node can serve (HAProxy's ``agent-check``).

With ``--agent-port`` a node listens on a second port (on ``--host``, without TLS) and answers every
connection with one line: ``up`` while it can serve, ``down #<why>`` while it cannot. A node on
Redis cannot serve while it does not hear its own heartbeat back through Redis
(:meth:`~securechat.server.nodewatch.NodeWatch.cut_off`): its connection to Redis or its subscriber
is cut, or Redis is down. One node on SQLite always answers ``up``. HAProxy takes a server it was
told ``down`` out of rotation and puts it back once it says ``up`` and its own health check passes
(docs/deployment.md, "A load balancer in front"); ``up`` and ``down`` change only that operational
state, never an administrator's ``drain`` or ``maint``.

After the line the node half-closes and drops whatever comes (HAProxy's ``agent-send`` string)
until the balancer closes: closing at once with unread bytes makes the kernel answer with a
reset, which may erase the line from the balancer's input before it reads it (RFC 7230, section
6.6, on the same risk for HTTP; on loopback the line came through anyway). A connection lasts at
most :data:`LINGER` seconds, and at most :data:`MAX_OPEN` are open at once (past that one is
closed unanswered), so the port costs a bounded few sockets whoever connects, and tells them no
more than that one line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, cast

LINGER: Final = 2.0  # seconds a connection may stay open after its line
MAX_OPEN: Final = 64


def agent_line(trouble: str | None) -> bytes:
    """The answer: ``up``, or ``down`` with ``trouble`` after a ``#`` (HAProxy shows it on its stats page)."""
    if trouble is None:
        return b"up\n"
    why = "".join(c if " " <= c <= "~" else " " for c in trouble)  # one printable line, whatever it holds
    return b"down #%s\n" % why.encode("ascii")


class AgentPort:
    """The agent port's protocol factory: ``trouble`` says why the node cannot serve (None: it can)."""

    def __init__(self, trouble: Callable[[], str | None]) -> None:
        self.trouble = trouble
        self.open = 0

    def __call__(self) -> AgentAnswer:
        return AgentAnswer(self)


class AgentAnswer(asyncio.Protocol):
    """One connection to the agent port: the line, a half-close, then closed when the balancer closes."""

    def __init__(self, port: AgentPort) -> None:
        self._port = port
        self._counted = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # a stream's (uvloop's is no asyncio.Transport subclass)
        if self._port.open >= MAX_OPEN:
            stream.abort()
            return
        self._port.open += 1
        self._counted = True
        stream.write(agent_line(self._port.trouble()))
        stream.write_eof()
        self._timer = asyncio.get_running_loop().call_later(LINGER, stream.abort)

    def data_received(self, data: bytes) -> None:
        """An ``agent-send`` string, or anything else: not read."""

    def eof_received(self) -> bool:
        return False  # the balancer is done: close

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._counted:
            self._port.open -= 1
            self._counted = False
