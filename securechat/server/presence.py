"""Presence: who hears that a name came online or left, pushed in 50 ms batches.

A change goes only to the sessions interested in that name: they looked it up,
wrote to it, received from it, or were given it on a page of ``list``. Pushing
every change to every connection made n logins cost O(n^2), and so did pushing
every change to every session that listed once. A session's interest is
bounded (:data:`MAX_INTEREST` names, the longest-held dropped first), so the
memory and the pushes it costs are bounded per connection. A batch
costs one write per interested connection however many people came and went
meanwhile; only the latest state of each name is pushed, never to the user it
is about (docs/protocol.md, "Server behaviour details": Directory).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from ..protocol import encode_frame

if TYPE_CHECKING:
    from .transport import Peer

PRESENCE_BATCH_SECONDS: Final = 0.05
MAX_INTEREST: Final = 1000  # names one session hears about: five pages of ``list``


class Presence:
    """Interest per session and the pending batch of changes."""

    def __init__(self) -> None:
        self._changes: dict[str, bool] = {}  # name -> latest state, in order of change
        self._interest: dict[Peer, dict[str, None]] = {}  # session -> names, longest-held first
        self._watchers: dict[str, set[Peer]] = {}  # name -> sessions interested in it
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def note(self, name: str, online: bool) -> None:
        """Record that ``name`` came online or left; the batch goes out within 50 ms."""
        self._changes.pop(name, None)
        self._changes[name] = online
        if self._timer is None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(PRESENCE_BATCH_SECONDS, self._push)

    def watch(self, peer: Peer, name: str) -> None:
        """From now on, push ``name``'s changes to ``peer`` (it looked the name up, wrote to it, heard
        from it or was given it in a list); past :data:`MAX_INTEREST` names the longest-held is dropped."""
        if peer.closing or name == peer.name:
            return
        names = self._interest.get(peer)
        if names is None:
            names = self._interest[peer] = {}
        elif name in names:
            del names[name]  # fresh interest: held the longest from now
            names[name] = None
            return
        names[name] = None
        watchers = self._watchers.get(name)
        if watchers is None:
            watchers = self._watchers[name] = set()
        watchers.add(peer)
        if len(names) > MAX_INTEREST:
            self._unwatch(peer, next(iter(names)))

    def watch_many(self, peer: Peer, names: list[str]) -> None:
        """:meth:`watch` each of ``names`` (the page of ``list`` that ``peer`` was given)."""
        for name in names:
            self.watch(peer, name)

    def _unwatch(self, peer: Peer, name: str) -> None:
        del self._interest[peer][name]
        self._drop_watcher(name, peer)

    def _drop_watcher(self, name: str, peer: Peer) -> None:
        watchers = self._watchers.get(name)
        if watchers is not None:
            watchers.discard(peer)
            if not watchers:
                del self._watchers[name]

    def forget(self, peer: Peer) -> None:
        """The session ended: its interest ends with it."""
        for name in self._interest.pop(peer, {}):
            self._drop_watcher(name, peer)

    def close(self) -> None:
        """Push nothing more."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _push(self) -> None:
        self._timer = None
        changes, self._changes = self._changes, {}
        if not changes or not self._watchers:
            return
        out: dict[Peer, list[bytes]] = {}
        for name, online in changes.items():
            watchers = self._watchers.get(name)
            if watchers:
                frame = encode_frame({"type": "presence", "name": name, "online": online})
                for peer in watchers:  # never about oneself: watch() refuses one's own name
                    out.setdefault(peer, []).append(frame)
        for peer, parts in out.items():  # a write may drop a slow reader: the sets are not iterated here
            if parts and not peer.closing:
                peer.write(parts[0] if len(parts) == 1 else b"".join(parts))
