"""ChatServer: the relay's lifecycle, its periodic sweeps, and the wiring of its parts.

Each accepted socket is a :class:`~securechat.server.transport.Peer` around a
sans-I/O :class:`~securechat.server.connection.ServerConnection`; the events
that come out of it are handled here: a login binds the name in the
:class:`~securechat.server.directory.Directory` and attaches the session to
:class:`~securechat.server.routing.LocalRouting`; sends and confirmations go to
routing; lookups and listings to the directory, with
:class:`~securechat.server.presence.Presence` noting who is interested in whom.
:class:`~securechat.server.admission.Admission` caps the connections. Handshake
and idle timeouts are one periodic sweep, so an idle session holds no timer.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, Final

from ..errors import RegistrationRefused
from ..names import format_fingerprint
from ..protocol import DEFAULT_MAX_FRAME
from ..tls import TlsChannel
from .admission import Admission
from .agent import AgentPort
from .config import ServerConfig
from .connection import UNREACHABLE, ServerConnection
from .directory import Directory
from .events import CheckName, Event, Handled, ListUsers, Login, Lookup, Received, RoomRequest, Send
from .handouts import Probation
from .identity import ServerIdentity, identity_for
from .presence import Presence
from .proxyheader import parse_networks
from .proxypeer import HeaderFirst, Waiting
from .registration import NewName, address_bucket
from .rooms import RoomService
from .routing import LocalRouting
from .seam import Routing
from .sqlite import SqliteStore
from .store import MessageStore
from .tlspeer import TlsPeer
from .transport import LINGER_SECONDS, Peer

log = logging.getLogger("securechat.server")

# asyncio's default listen backlog (100) overflows under a login burst: the kernel drops SYNs
# and clients back off for 1, 3, 7, 15 s. The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG: Final = 4096
# Handshake and idle timeouts are checked by one periodic sweep, at least this often.
SWEEP_INTERVAL: Final = 1.0
EXPIRE_INTERVAL: Final = 3600.0


def open_store(config: ServerConfig) -> MessageStore:
    """The store ``config`` asks for: Redis when it has a URL, else SQLite at ``db_path``."""
    limits = {
        "queue_limit": config.queue_limit, "queue_bytes": config.queue_bytes, "queue_ttl": config.queue_ttl,
        "sender_share": config.sender_share, "store_bytes": config.max_store_bytes,
        "registration": config.registration,
    }  # fmt: skip
    if config.redis_url is None:
        return SqliteStore(config.db_path, max_rooms=config.max_rooms, **limits)  # type: ignore[arg-type]
    from .redisstore import RedisStore
    from .resp import RedisAddress

    address, prefix = RedisAddress.from_url(config.redis_url), config.redis_prefix
    replicas = config.redis_replicas
    return RedisStore(address, prefix=prefix, max_rooms=config.max_rooms, replicas=replicas, **limits)  # type: ignore[arg-type]


class ChatServer:
    """The relay. ``start()`` binds, ``serve_forever()`` waits, ``close()`` shuts down cleanly."""

    def __init__(self, config: ServerConfig, store: MessageStore | None = None) -> None:
        config.validate()
        self.config = config
        self._store: MessageStore = store or open_store(config)
        self._directory = Directory(self._store)
        self._presence = Presence()
        self._admission = Admission(config.max_connections, config.max_per_ip)
        self._conns = self._admission.sessions  # the admitted connections
        networks = parse_networks(config.proxy_protocol_from)  # behind a balancer: server/proxypeer.py
        self._waiting = Waiting(networks, config.handshake_timeout, config.max_connections) if networks else None
        self._probation = Probation(self._store, config.max_hand_outs, self._spawn)  # issue 13 item 1: shared with close()
        self._routing: Routing = self._make_routing()
        self._rooms = self._make_rooms()
        self.handlers: dict[type[Event], Callable[[Peer, Any], Handled]] = {  # transport.Handler
            Send: self._routing.send,
            Received: self._routing.received,
            Login: self._on_login,
            Lookup: self._on_lookup,
            ListUsers: self._on_list,
            CheckName: self._on_check_name,
            RoomRequest: self._rooms.handle,
        }
        self._server: asyncio.base_events.Server | None = None
        self._agent: asyncio.base_events.Server | None = None  # --agent-port's
        self._server_id = b""
        self.identity: ServerIdentity | None = None  # the TLS identity; None in plaintext
        self._tls: ssl.SSLContext | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # background work, cancelled at shutdown
        self._pipelines: set[asyncio.Task[None]] = set()  # peers' handlers that wait, awaited at shutdown
        self._conns_gone: asyncio.Future[None] | None = None  # set when close() has seen every connection go
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._stopped = asyncio.Event()
        self._closing = False
        self._port = 0

    @property
    def store_kind(self) -> str:
        """``redis`` (nodes sharing Redis) or ``sqlite`` (one node)."""
        return "sqlite" if self.config.redis_url is None else "redis"

    def _make_routing(self) -> Routing:
        if self.config.redis_url is None:
            return LocalRouting(self.config, self._store, self._directory, self._presence, self._spawn, self._probation)
        from .cluster import ClusterRouting
        from .redisstore import RedisStore

        if not isinstance(self._store, RedisStore):
            raise TypeError("a server with a Redis URL needs the Redis store")
        return ClusterRouting(self.config, self._store, self._directory, self._presence, self._spawn, self._probation)

    def _make_rooms(self) -> RoomService:
        """Rooms on the store's backend: one node on SQLite, or nodes sharing Redis."""
        store, routing = self._store, self._routing
        if isinstance(store, SqliteStore) and isinstance(routing, LocalRouting):
            from .roomrouting import LocalRooms

            return RoomService(self.config, store, self._directory, LocalRooms(routing, store))
        from .cluster import ClusterRouting
        from .cluster_rooms import ClusterRooms
        from .redisstore import RedisStore

        if isinstance(store, RedisStore) and isinstance(routing, ClusterRouting):
            return RoomService(self.config, store, self._directory, ClusterRooms(routing, store))
        raise TypeError("rooms need the SQLite store with one-node routing, or the Redis store with cluster routing")

    # --- lifecycle --------------------------------------------------------------------

    def session_names(self) -> list[str | None]:
        """The name of each admitted connection (None before its login), for monitoring and tests."""
        return [peer.name for peer in self._conns]

    @property
    def port(self) -> int:
        """The bound port (the real one when the config asked for 0)."""
        return self._port

    def held_bytes(self) -> int:
        """Bytes of forwarded, unconfirmed frames held in memory for all sessions (``--max-unconfirmed-bytes``)."""
        return self._routing.held_bytes

    def caught_up(self, name: str) -> bool:
        """``name`` is online here and has nothing waiting in the store (for monitoring and tests)."""
        return self._routing.caught_up(name)

    async def start(self) -> None:
        """Open the store, expire old messages and bind the listening socket."""
        loop = asyncio.get_running_loop()
        try:
            if self.config.tls:
                self.identity = identity_for(self.config)
                self._tls = self.identity.context()
            self._server_id = await self._store.server_id()
            await self._routing.start()
            expired = await self._store.expire()
            if expired:
                log.info("expired %d queued messages older than the TTL", expired)
            self._server = await loop.create_server(
                self.accept, self.config.host, self.config.port, backlog=LISTEN_BACKLOG
            )
            if self.config.agent_port:
                self._agent = await self._listen_agent(loop)
        except BaseException:
            self._closing = True
            if self._server is not None:  # the agent port could not be bound
                self._server.close()
            await self._store.close()
            await self._routing.close()
            self._stopped.set()
            raise
        sockets = self._server.sockets
        self._port = sockets[0].getsockname()[1] if sockets else self.config.port
        self._spawn(self._expire_loop())
        self._sweep_timer = loop.call_later(self._sweep_interval(), self._sweep)
        if self.identity is None:
            log.info("listening on %s:%d (plaintext: no TLS, for tests and local use only)", self.config.host, self._port)
        else:
            log.info(
                "listening on %s:%d (TLS 1.3, server identity %s)",
                self.config.host, self._port, format_fingerprint(self.identity.fingerprint),
            )
        if self._agent is not None:
            log.info("agent port %s:%d (plaintext): 'up' or 'down' for the load balancer", self.config.host, self.config.agent_port)

    async def _listen_agent(self, loop: asyncio.AbstractEventLoop) -> asyncio.base_events.Server:
        host, port = self.config.host, self.config.agent_port
        try:
            return await loop.create_server(AgentPort(self._routing.trouble), host, port)
        except OSError as exc:
            raise OSError(exc.errno, f"the agent port (--agent-port): {exc.strerror or exc}") from exc

    def accept(self) -> asyncio.Protocol:
        """The listening socket's protocol factory: a peer, behind a PROXY header reader if balancers are trusted."""
        peer = self.new_peer()
        return peer if self._waiting is None else HeaderFirst(peer, self._waiting)

    def new_peer(self) -> Peer:
        """A peer for one accepted socket (the hot-path bench gives it a fake transport)."""
        loop = asyncio.get_running_loop()
        max_out = self.config.max_outgoing_buffer
        if self._tls is None or self.identity is None:
            return Peer(self, ServerConnection(self.config, self._server_id, loop.time), max_out)
        conn = ServerConnection(self.config, self._server_id, loop.time, identity=self.identity.identity)
        pad = min(self.config.max_frame, DEFAULT_MAX_FRAME) if self.config.padding else 0
        return TlsPeer(self, conn, max_out, TlsChannel(self._tls, server_side=True), pad)

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` is called."""
        if self._server is None:
            await self.start()
        await self._stopped.wait()

    async def close(self) -> None:
        """Stop accepting, close every connection (requeueing unconfirmed messages), flush the store."""
        if self._closing:
            await self._stopped.wait()
            return
        self._closing = self._admission.closing = True
        self._probation.stopping = True  # the sessions ending now are not to blame for what they hold
        try:
            for listening in (self._server, self._agent):
                if listening is not None:
                    listening.close()
            for peer in list(self._conns):
                peer.end("server shutting down")
            for refused in list(self._admission.refused):
                refused.transport.abort()
            self._presence.close()
            if self._sweep_timer is not None:
                self._sweep_timer.cancel()
            for task in list(self._tasks):
                task.cancel()
            pending: list[asyncio.Future[Any]] = [*self._tasks, *self._pipelines]
            if self._conns:  # closing transports flush what is buffered first
                self._conns_gone = asyncio.get_running_loop().create_future()
                pending.append(self._conns_gone)
            if pending:
                await asyncio.wait(pending, timeout=LINGER_SECONDS + 1)
            for peer in list(self._conns):
                peer.transport.abort()
            await asyncio.sleep(0)  # let the aborted connections' connection_lost run
            self._routing.flush_deletes()
            await self._store.close()
            await self._routing.close()
            log.info("server stopped")
        finally:
            self._stopped.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def _expire_loop(self) -> None:
        interval = min(EXPIRE_INTERVAL, self.config.queue_ttl)
        while True:
            await asyncio.sleep(interval)
            count = await self._store.expire()
            if count:
                log.info("expired %d queued messages older than the TTL", count)

    def _sweep(self) -> None:
        """Time out unfinished handshakes and idle sessions: one periodic pass, no timer per connection."""
        self._sweep_timer = None
        if self._closing:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        late = [(peer, why) for peer in self._conns if (why := peer.conn.overdue(now)) is not None]
        for peer, why in late:
            peer.fail("timeout", why)
        self._sweep_timer = loop.call_later(self._sweep_interval(), self._sweep)

    def _sweep_interval(self) -> float:
        # At most a quarter of the shorter timeout late, and at most a second.
        return min(SWEEP_INTERVAL, self.config.handshake_timeout / 4, self.config.idle_timeout / 4)

    # --- transport.Handler --------------------------------------------------------------

    def connected(self, peer: Peer) -> None:
        if not self._admission.admit(peer):
            peer.refuse(linger=self._admission.hold_refused(peer))

    def release(self, peer: Peer) -> None:
        self._presence.forget(peer)
        self._routing.detach(peer)

    def gone(self, peer: Peer) -> None:
        self.release(peer)
        if not self._admission.leave(peer):
            return
        conn = peer.conn
        who = f" ({conn.name})" if conn.name else ""
        log.info("connection %s%s closed after %.1fs: %s", conn.peer, who, peer.loop.time() - conn.started, conn.reason)
        if not self._conns and self._conns_gone is not None and not self._conns_gone.done():
            self._conns_gone.set_result(None)

    def track(self, task: asyncio.Task[None]) -> None:
        self._pipelines.add(task)
        task.add_done_callback(self._pipelines.discard)

    # --- events that need the directory -------------------------------------------------

    async def _on_login(self, peer: Peer, login: Login) -> None:
        name = login.name
        try:
            asker = NewName(address_bucket(peer.ip), login.fingerprint)
            known, new = await self._directory.bind(name, login.key, login.fingerprint, asker)
            if new:
                log.info("registered %s with key %s from %s", name, login.fingerprint, peer.conn.peer)
            if peer.closing:
                return
            if known != login.fingerprint:
                peer.fail("name_taken", f"the name '{name}' is registered with another key", login.rid)
                return
            await self._routing.claim(peer, name)
        except RegistrationRefused as exc:  # nothing was registered, nothing spent
            log.info("refused to register %s from %s: %s bound", name, peer.conn.peer, exc.bound)
            peer.fail("registration_limited", str(exc), login.rid)
            return
        except ConnectionError as exc:  # the shared state is out of reach: the client comes back later
            log.debug("login of %s from %s failed: %s", name, peer.conn.peer, exc)  # the store logs the outage
            peer.fail("unavailable", UNREACHABLE, login.rid)
            return
        if peer.closing:
            return
        peer.accept_login(new)
        self._routing.attach(peer)
        log.debug("session %s for %s", peer.conn.peer, name)

    async def _on_lookup(self, peer: Peer, lookup: Lookup) -> None:
        reg = await self._directory.registration(lookup.name)
        if reg is None:
            peer.error("unknown_user", f"no user named '{lookup.name}'", lookup.rid)
            return
        self._presence.watch(peer, lookup.name)
        reply = {"type": "key", "name": lookup.name, "pubkey": reg.pubkey_pem, "fingerprint": reg.fingerprint}
        peer.answer(reply, lookup.rid)

    async def _on_check_name(self, peer: Peer, check: CheckName) -> None:
        """Before ``hello``: whether ``check.name`` is registered (docs/protocol.md section 4, step 0)."""
        registered = await self._directory.registration(check.name) is not None
        peer.answer({"type": "name_status", "name": check.name, "registered": registered}, check.rid)

    async def _on_list(self, peer: Peer, request: ListUsers) -> None:
        names, more = await self._directory.page(request.after, request.prefix)
        self._presence.watch_many(peer, names)
        online = await self._routing.online(names)
        users = [{"name": n, "online": n in online} for n in names]
        peer.answer({"type": "users", "users": users, "more": more}, request.rid)
