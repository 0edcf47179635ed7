"""NodeWatch: which node holds each online name, and whether that node is still heard from.

Every node publishes a heartbeat on the presence channel each second (a
presence message with an empty name), and every presence message says which
node sent it. When a node is cut from Redis, Redis still counts its subscriber
until TCP gives up (minutes), so a send to a name it holds is stored and taken
as handed out, and the ack can only come from that node: once its heartbeat has
lapsed, the senders' nodes look such sends up in the store instead
(:func:`securechat.server.awaited.sweep_overdue`).
"""

from __future__ import annotations

import time

from .awaited import ACK_DEADLINE


class NodeWatch:
    """The last time each node was heard from, and the node each online name was last announced on."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._last: dict[str, float] = {}
        self._holder: dict[str, str] = {}

    def beat(self) -> bytes:
        """This node's heartbeat, as a presence message (name empty)."""
        return b"\n1\n0\n" + self.node.encode()

    def heard(self, node: str, name: str, online: bool) -> None:
        """A presence message (or a heartbeat, ``name`` empty) from ``node``."""
        self._last[node] = time.monotonic()
        if not name:
            return
        if online:
            self._holder[name] = node
        elif self._holder.get(name) == node:
            del self._holder[name]

    def lost(self, name: str, silent_for: float = ACK_DEADLINE) -> bool:
        """Whether ``name`` is held by another node that has not been heard from for ``silent_for`` seconds."""
        holder = self._holder.get(name)
        if holder is None or holder == self.node:
            return False
        return time.monotonic() - self._last.get(holder, 0.0) > silent_for
