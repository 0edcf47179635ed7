"""Presence: who hears that a name came online or left, pushed in 50 ms batches.

A change goes only to the sessions interested in that name (they looked it up,
wrote to it or received from it) and to those that listed the directory:
pushing every change to every connection made n logins cost O(n^2). A batch
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


class Presence:
    """Interest per session and the pending batch of changes."""

    def __init__(self) -> None:
        self._changes: dict[str, bool] = {}  # name -> latest state, in order of change
        self._interest: dict[Peer, set[str]] = {}  # session -> names it showed interest in
        self._watchers: dict[str, set[Peer]] = {}  # name -> sessions interested in it
        self._everyone: set[Peer] = set()  # sessions that listed the directory
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def note(self, name: str, online: bool) -> None:
        """Record that ``name`` came online or left; the batch goes out within 50 ms."""
        self._changes.pop(name, None)
        self._changes[name] = online
        if self._timer is None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(PRESENCE_BATCH_SECONDS, self._push)

    def watch(self, peer: Peer, name: str) -> None:
        """From now on, push ``name``'s changes to ``peer`` (it looked the name up, wrote to it or heard from it)."""
        names = self._interest.get(peer)
        if names is not None and name in names:
            return
        if peer in self._everyone or peer.closing or name == peer.name:
            return
        if names is None:
            names = self._interest[peer] = set()
        names.add(name)
        watchers = self._watchers.get(name)
        if watchers is None:
            watchers = self._watchers[name] = set()
        watchers.add(peer)

    def watch_all(self, peer: Peer) -> None:
        """From now on, push every name's changes to ``peer`` (it listed the directory)."""
        if not peer.closing:
            self._everyone.add(peer)

    def forget(self, peer: Peer) -> None:
        """The session ended: its interest ends with it."""
        self._everyone.discard(peer)
        for name in self._interest.pop(peer, ()):
            watchers = self._watchers.get(name)
            if watchers is not None:
                watchers.discard(peer)
                if not watchers:
                    del self._watchers[name]

    def close(self) -> None:
        """Push nothing more."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _push(self) -> None:
        self._timer = None
        changes, self._changes = self._changes, {}
        if not changes or not (self._everyone or self._watchers):
            return
        frames = {name: encode_frame({"type": "presence", "name": name, "online": online}) for name, online in changes.items()}
        out: dict[Peer, list[bytes]] = {}
        for peer in self._everyone:
            out[peer] = [frame for name, frame in frames.items() if name != peer.name]  # never about oneself
        for name, frame in frames.items():
            for peer in self._watchers.get(name, ()):
                if peer not in self._everyone:
                    out.setdefault(peer, []).append(frame)
        for peer, parts in out.items():  # a write may drop a slow reader: the sets are not iterated here
            if parts and not peer.closing:
                peer.write(parts[0] if len(parts) == 1 else b"".join(parts))
