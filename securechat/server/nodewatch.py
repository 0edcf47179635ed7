"""NodeWatch: which node holds each online name, and whether that node is still heard from.

Every node publishes a heartbeat on the presence channel each second (a
presence message with an empty name), and every presence message says which
node sent it. When a node is cut from Redis, Redis still counts its subscriber
until TCP gives up (minutes), so a send to a name it holds is stored and taken
as handed out, and the ack can only come from that node: once its heartbeat has
lapsed, the senders' nodes look such sends up in the store instead
(:func:`securechat.server.awaited.sweep_overdue`).

A presence message is ``<name>\n<1|0>\n<session number>\n<node>`` (online or
offline). Each name's latest session number is kept, so that an old session's
late "offline" cannot undo a newer "online".
"""

from __future__ import annotations

import time

from .awaited import ACK_DEADLINE

# Seconds without this node's own heartbeat heard back through Redis (one a second) after which it is
# cut off: its agent port says ``down`` (agent.py). Three beats, so one late beat on a busy node is not it.
CUT_OFF_AFTER = 3.0


class NodeWatch:
    """The last time each node was heard from, and the node each online name was last announced on."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._last: dict[str, float] = {node: time.monotonic()}  # this node's entry: its own beats, heard back
        self._holder: dict[str, str] = {}
        self._numbers: dict[str, int] = {}  # online names -> the session number that said so

    def beat(self) -> bytes:
        """This node's heartbeat, as a presence message (name empty)."""
        return self.announce("", True, 0)

    def announce(self, name: str, online: bool, number: int) -> bytes:
        """This node's presence message: ``name``'s session ``number`` is online (or offline)."""
        return b"%s\n%d\n%d\n%s" % (name.encode(), online, number, self.node.encode())

    def read(self, data: bytes) -> tuple[str, bool, int, str]:
        """A presence message, noted as heard: name, online, session number, node (ValueError if garbled)."""
        name, online, number, node = data.split(b"\n", 3)
        read = (name.decode(), online == b"1", int(number), node.decode())  # whole before anything is noted
        self.heard(read[3], read[0], read[1])
        return read

    def newest(self, name: str, online: bool, number: int) -> bool:
        """Note a presence change of ``name``; False if a newer session's said otherwise (it is ignored)."""
        if number < self._numbers.get(name, 0):
            return False
        if online:
            self._numbers[name] = number
        else:
            self._numbers.pop(name, None)
        return True

    def heard(self, node: str, name: str, online: bool) -> None:
        """A presence message (or a heartbeat, ``name`` empty) from ``node``."""
        self._last[node] = time.monotonic()
        if not name:
            return
        if online:
            self._holder[name] = node
        elif self._holder.get(name) == node:
            del self._holder[name]

    def reachable(self, name: str, now: float) -> bool:
        """Whether ``name`` was last announced online (on any node, this one too) on a node not silent at
        ``now`` (monotonic): a live send to it may expect an answer."""
        holder = self._holder.get(name)
        return holder is not None and not self._silent(holder, now, ACK_DEADLINE)

    def lost(self, name: str, silent_for: float = ACK_DEADLINE) -> bool:
        """Whether ``name`` is held by another node that has not been heard from for ``silent_for`` seconds."""
        holder = self._holder.get(name)
        return holder is not None and self._silent(holder, time.monotonic(), silent_for)

    def cut_off(self, now: float, after: float = CUT_OFF_AFTER) -> bool:
        """Has this node not heard its own heartbeat back for ``after`` seconds at ``now`` (monotonic)?
        Published by its Redis connection and heard by its subscriber, a beat heard back means both are
        up and Redis answers."""
        return now - self._last[self.node] > after

    def _silent(self, holder: str, now: float, silent_for: float) -> bool:
        """Has the node ``holder`` not been heard from for ``silent_for`` seconds at ``now``? This one never is."""
        return holder != self.node and now - self._last.get(holder, 0.0) > silent_for
