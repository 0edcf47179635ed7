"""The routing seam: what the server asks of routing, on one node or several.

:class:`Routing` is what the server calls; :class:`~securechat.server.routing.LocalRouting`
routes within this process, and :class:`~securechat.server.cluster.ClusterRouting`
between server nodes that share Redis. A login is two steps: ``claim`` (may
wait: cluster-wide it numbers the session and tells older ones they are
replaced) before ``welcome``, then ``attach`` (route to the session, end the
one it replaces on this node, note presence, stream the backlog) right after
it, so nothing routed reaches the peer before its ``welcome``. ``online`` may
ask another process, so it is awaited. The store keeps its call-order
guarantee on every backend. Rooms (:mod:`securechat.server.rooms`) also need
:class:`RoomRouting`: ``session`` (pushes of a room's changes, a member's
session for a room message) and ``hand`` (one member's copy, held unconfirmed
like any message), on one node today.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import TYPE_CHECKING, Protocol

from .events import Handled, Received, Send

if TYPE_CHECKING:
    import asyncio

    from .mailbox import InFlight
    from .transport import Peer


class Routing(Protocol):
    """What the server asks of routing (the module docstring says how a login goes through it)."""

    async def start(self) -> None:
        """Before the first connection (a cluster connects to its peers here)."""

    async def claim(self, peer: Peer, name: str) -> None:
        """``peer`` proved it is ``name``: make it the name's session, before ``welcome``; raises if it cannot."""

    def attach(self, peer: Peer) -> None:
        """``welcome`` went out: route to ``peer``, replace an older session, note presence, stream the backlog."""

    def detach(self, peer: Peer) -> None:
        """Stop routing to ``peer`` (idempotent); its unconfirmed messages go back to the store."""

    def send(self, peer: Peer, message: Send) -> Handled:
        """Route a message: at once to an online recipient, else to the store (acked ``queued``)."""

    def received(self, peer: Peer, confirmation: Received) -> None:
        """``peer`` confirmed a message: delete it, tell its sender ``delivered``."""

    async def online(self, names: Sequence[str]) -> Container[str]:
        """Which of ``names`` are online."""

    def flush_deletes(self) -> None:
        """Submit the deletes of confirmed messages gathered so far."""

    async def close(self) -> None:
        """After every connection ended and the deletes were flushed."""

    @property
    def held_bytes(self) -> int:
        """Bytes of frames forwarded live and held until confirmed, for all sessions of this node."""

    def caught_up(self, name: str) -> bool:
        """``name`` has a session here and nothing of its waits in the store: messages go to it at once."""


class RoomRouting(Routing, Protocol):
    """What rooms (:mod:`securechat.server.rooms`) also ask: one node's sessions (not yet several nodes')."""

    def session(self, name: str) -> Peer | None:
        """The session for ``name`` on this node (room pushes and fan-out); a multi-node routing publishes instead."""

    def hand(self, target: Peer, entry: InFlight) -> asyncio.Future[bool] | None:
        """A message for ``target``'s session: None once written (held until ``received``), else the future of
        storing it for the session, behind what waits there (its window is full; :class:`QueueFull` over the caps)."""
