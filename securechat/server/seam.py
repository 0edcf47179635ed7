"""The routing seam: what the server asks of routing, on one node or several.

:class:`Routing` is what the server calls; :class:`~securechat.server.routing.LocalRouting`
routes within this process, and :class:`~securechat.server.cluster.ClusterRouting`
between server nodes that share Redis. A login is two steps: ``claim`` (may
wait: cluster-wide it numbers the session and tells older ones they are
replaced) before ``welcome``, then ``attach`` (route to the session, end the
one it replaces on this node, note presence, stream the backlog) right after
it, so nothing routed reaches the peer before its ``welcome``. ``online`` may
ask another process, so it is awaited. The store keeps its call-order
guarantee on every backend. Rooms (:mod:`securechat.server.rooms`) route
through :class:`RoomRouting` (:mod:`securechat.server.roomrouting`): ``push``
a room's change to its members' sessions and ``copy`` one member's copy of a
room message, on one node or across nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

from .events import Handled, Received, Send
from .handouts import Probation
from .store import MessageStore

if TYPE_CHECKING:
    import asyncio

    from .config import ServerConfig
    from .directory import Directory
    from .mailbox import InFlight
    from .presence import Presence
    from .sendorder import SendOrder
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

    def trouble(self) -> str | None:
        """Why this node cannot serve now, or None (the load balancer's agent port says so: agent.py)."""


StoreT = TypeVar("StoreT", bound=MessageStore)


class RoutingCore(Generic[StoreT]):
    """What both routings are made of; ``probation`` is per node (made here unless shared)."""

    def __init__(
        self,
        config: ServerConfig,
        store: StoreT,
        directory: Directory,
        presence: Presence,
        spawn: Callable[[Coroutine[Any, Any, None]], object],
        probation: Probation | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._directory = directory
        self._presence = presence
        self._spawn = spawn
        self._probation = probation or Probation(store, config.max_hand_outs, spawn)
        self._own_state()

    def _own_state(self) -> None:
        """The rest of a routing's state, set up last (each routing's own)."""


# What became of one member's copy of a room message: written to its session (its ack comes later), stored
# for it (``queued`` now), confirmed already (a resend: ``delivered`` now), or over its queue's caps.
CopyOutcome = Literal["handed", "queued", "delivered", "full"]


# A session's catch-up on the rooms' changes after a gap: (peer, its name, room -> last seq it was sent).
CatchUp = Callable[["Peer", str, Mapping[str, int]], Coroutine[Any, Any, None]]


class RoomRouting(Protocol):
    """What rooms ask of routing: pushes and members' copies, wherever the members' sessions are."""

    def room_seq(self, room: str) -> asyncio.Future[int | None] | None:
        """The room's last ``seq`` in the shared store, to check a cached state against (several nodes);
        None on one node, the rooms' only writer, whose cached states are the truth."""

    def push(self, names: Iterable[str], room: str, seq: int, frame: bytes) -> None:
        """Write ``frame`` (``room``'s change at ``seq``) to each of ``names``' sessions that is online, on whatever node."""

    def told(self, peer: Peer, room: str, seq: int) -> None:
        """``peer`` was answered ``room``'s entries up to ``seq``: a catch-up after a gap starts after it."""

    def after_gap(self, catch_up: CatchUp) -> None:
        """Run ``catch_up(peer, name, told)`` for every session of this node after its pokes had a gap (several
        nodes; ``told``: room -> the last seq the session was sent); one node has no gaps."""

    def copy(self, sender: Peer, member: str, entry: InFlight) -> CopyOutcome | asyncio.Future[CopyOutcome]:
        """Route ``member``'s copy of a room message like a one-to-one message: in order, once, acked per member."""

    def order(self, sender: Peer) -> SendOrder | None:
        """The order of ``sender``'s sends across a failure of the shared store (several nodes); None on one node,
        whose store does not fail a send and let the next one through."""
