"""The client session: one authenticated connection to a server, kept alive.

:class:`ClientSession` implements :class:`securechat.events.SessionAPI` as a thin asyncio shell
around the sans-I/O :class:`~securechat.client.connection.ClientConnection`: it connects,
reconnects with capped exponential backoff and jitter, pings, matches answers to requests by
``rid`` (:mod:`~securechat.client.requests`), and hands messages to the incoming policy
(:mod:`~securechat.client.inbox`), sends to the outgoing one (:mod:`~securechat.client.outbox`)
and room frames to :mod:`~securechat.client.rooms`. Front ends hear what happened through the
immutable events of :mod:`securechat.events`; nothing here imports a UI.

Connection life cycle::

    connecting -> (hello, challenge, auth, welcome) -> online
    online --(EOF, framing error, silence, fatal error)--> reconnecting (backoff) -> connecting
    (with several nodes of one server, every failed or lost connection moves on to the next one)
    a fatal error retrying cannot fix (PERMANENT_CODES) -> offline; run() raises it, kept in .refused
    close() -> offline, run() returns

A bad frame from the server is reported as :class:`~securechat.events.ErrorReported` and skipped;
a framing error, or no byte for ``silence_timeout`` seconds (``2 * ping_interval + 5``), drops the
connection and we reconnect. Nothing a server sends can make the session raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Coroutine, Sequence
from typing import Any, Final

from ..errors import BadRequest, SecurechatError, ServerErrorReply, ServerRefused, SessionClosed
from ..events import (
    ConnectionChanged,
    ErrorReported,
    EventListener,
    PresenceChanged,
    Ready,
    ServerPinned,
    ServerRefusedAlert,
    SessionEvent,
    UserEntry,
    UsersListed,
)
from ..names import parse_typed_name, parse_typed_target
from ..protocol import DEFAULT_MAX_FRAME, WRONG_TRANSPORT_CODES
from ..records import ContactInfo
from . import connection as wire
from .contacts import Contacts
from .inbox import Inbox, IncomingQueue
from .link import Link, LinkDropped, raise_if_dropped, why_not_connected
from .local import LocalQueries
from .outbox import Outbox
from .parts import SessionParts, backoff
from .requests import PendingRequests
from .rooms import RoomClient
from .servers import KnownServers, ServerTrust, server_address
from .state import ClientStore

log = logging.getLogger(__name__)

# Fatal codes that a reconnect cannot cure: stop and tell the user.
PERMANENT_CODES: Final = WRONG_TRANSPORT_CODES | {
    "name_taken", "auth_failed", "bad_key", "invalid_name", "version_unsupported", "replaced",
    "registration_limited"}  # a new name over the server's bounds: a retry in seconds would be refused too


class ClientSession(LocalQueries):
    """One user's session with a server; see the module docstring for its life cycle."""

    def __init__(
        self,
        store: ClientStore,
        host: str = "127.0.0.1",
        port: int = 5000,
        *,
        ping_interval: float = 30.0,
        request_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        max_frame: int = DEFAULT_MAX_FRAME,
        silence_timeout: float | None = None,
        rng: random.Random | None = None,
        more_servers: Sequence[tuple[str, int]] = (),  # other nodes of the same server, tried in turn
        plaintext: bool = False,
        trust: ServerTrust | None = None,
    ) -> None:
        """TLS unless ``plaintext``; ``trust`` defaults to the known servers of the store's home."""
        self._store = store
        self._identity = store.require_identity()
        self.servers: tuple[tuple[str, int], ...] = ((host, port), *more_servers)
        self._server_index = 0
        self.host, self.port = host, port  # the node connected or tried now
        self.ping_interval = ping_interval
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_frame = max_frame
        # No byte at all for this long (pongs included): the connection is dead.
        self.silence_timeout = silence_timeout if silence_timeout is not None else ping_interval * 2 + 5
        self._rng = rng if rng is not None else random.Random()
        self.plaintext = plaintext
        self._trust = None if plaintext else trust or ServerTrust(KnownServers.in_home(store.directory.parent))
        self._listeners: list[EventListener] = []
        self._contacts = Contacts(store, self._emit)
        parts = SessionParts(store, self._identity, self._contacts, self._emit, self.lookup)
        self._requests = PendingRequests()
        self.rooms = RoomClient(parts, self._requests, self._connection, request_timeout)  # SessionAPI.rooms
        self._inbox = Inbox(parts, self.rooms, retry_initial=backoff_initial, retry_max=backoff_max, rng=self._rng)
        self._outbox = Outbox(parts, max_frame=max_frame, retry_max=backoff_max, rng=self._rng)
        self._conn: Link | None = None  # set once welcomed
        self._socket: Link | None = None  # set from connect to close
        self._online = asyncio.Event()
        self._stop = asyncio.Event()
        self._closing = False
        self._running = False
        self._done = asyncio.Event()
        self._last_drop = ""
        self.refused: ServerErrorReply | None = None  # the refusal for good that ended run(), if any
        self._tasks: set[asyncio.Task[None]] = set()  # room work started by the read loop

    # --- SessionAPI: identity and listeners ------------------------------------------

    @property
    def name(self) -> str:
        return self._identity.name

    @property
    def fingerprint(self) -> str:
        return self._identity.fingerprint

    @property
    def store(self) -> ClientStore:
        return self._store

    @property
    def online(self) -> bool:
        return self._online.is_set()

    def add_listener(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: EventListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def _emit(self, event: SessionEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken UI callback must not kill the session
                # The event's type only: its fields hold plaintext and text from outside.
                log.exception("event listener failed on a %s event", type(event).__name__)

    # --- SessionAPI: run / close --------------------------------------------------------

    async def run(self) -> None:
        """Serve until :meth:`close`, reconnecting with backoff; raises what a reconnect cannot fix."""
        if self._running:
            raise RuntimeError("ClientSession.run() is already running")
        self._running = True
        self._done.clear()
        attempt = 0
        try:
            while not self._closing:
                self._emit(ConnectionChanged("connecting"))
                try:
                    welcomed = await self._connect_and_serve()
                except (ServerErrorReply, ServerRefused) as exc:  # PERMANENT_CODES, or the TLS checks
                    if isinstance(exc, ServerRefused):
                        self._emit(ServerRefusedAlert.of(exc))
                        self._emit(ConnectionChanged("offline"))  # why was just told in the alert, once
                    else:
                        self.refused = exc
                        self._emit(ConnectionChanged("offline", detail=str(exc)))
                    raise
                if self._closing:
                    break
                if welcomed:
                    attempt = 0
                self._next_server()
                delay = self._backoff(attempt)
                attempt += 1
                self._emit(ConnectionChanged("reconnecting", retry_in=delay, detail=self._last_drop))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
            self._emit(ConnectionChanged("offline"))
        finally:
            self._running = False
            self._done.set()

    def _next_server(self) -> None:
        """A connection failed or ended: the next attempt goes to the next node (the same one if alone)."""
        if len(self.servers) > 1:
            self._server_index = (self._server_index + 1) % len(self.servers)
            self.host, self.port = self.servers[self._server_index]

    def _backoff(self, attempt: int) -> float:
        return backoff(attempt, self.backoff_initial, self.backoff_max, self._rng)

    async def close(self) -> None:
        """Stop reconnecting and close the connection (pending sends stay in the outbox)."""
        self._closing = True
        self._stop.set()
        if self._socket is not None:
            self._socket.close()
        self._outbox.cancel_retries()
        if self._running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), 5.0)

    async def wait_online(self, timeout: float | None = None) -> bool:
        """Wait until authenticated; False on timeout."""
        try:
            await asyncio.wait_for(self._online.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every outbox entry is acknowledged; False on timeout."""
        return await self._outbox.wait_idle(timeout)

    # --- one connection -----------------------------------------------------------------

    async def _connect_and_serve(self) -> bool:
        """Run one connection to its end; True if it got as far as ``welcome``."""
        connection = wire.ClientConnection(self.name, self._identity.private_key, max_frame=self.max_frame)
        try:
            link = await Link.open(self.host, self.port, self.connect_timeout, connection, self._trust)
        except (OSError, TimeoutError) as exc:
            self._last_drop = f"cannot connect to {self.host}:{self.port}: {why_not_connected(exc, self.connect_timeout)}"
            return False
        if link.pinned is not None:
            self._emit(ServerPinned(server_address(self.host, self.port), link.pinned))
        self._socket = link
        try:
            welcomed = await self._serve(link)
        finally:
            self._online.clear()
            self._conn = None
            self._socket = None
            self._outbox.detach()
            self._requests.connection_lost()
            for task in list(self._tasks):
                task.cancel()
            await link.wait_closed()
        if connection.fatal is not None and connection.fatal.code in PERMANENT_CODES:
            raise connection.fatal
        return welcomed

    async def _serve(self, link: Link) -> bool:
        """Handshake, then read until the connection drops; True if welcomed."""
        welcomed = False
        tasks: list[asyncio.Task[None]] = []
        try:
            if self._closing:
                return False
            link.flush()  # the hello
            incoming = IncomingQueue()
            welcome, events = await asyncio.wait_for(self._handshake(link, incoming), self.request_timeout)
            welcomed = True
            self._conn = link
            self._online.set()
            self._emit(Ready(self.name, self.fingerprint, welcome.new))
            self._emit(ConnectionChanged("online"))
            tasks.append(asyncio.create_task(self._inbox.serve(link, incoming)))
            tasks.append(asyncio.create_task(self._pinger(link)))
            tasks.append(asyncio.create_task(self.rooms.sync()))
            self._outbox.attach(link)
            await self._read_loop(link, incoming, events)
        except TimeoutError:
            self._last_drop = "the server did not finish the handshake in time"
        except LinkDropped as exc:
            self._last_drop = str(exc)
        except (ConnectionError, OSError) as exc:
            self._last_drop = f"connection lost: {exc}"
        except Exception as exc:  # a bug here must cost a reconnect, not the session
            log.exception("connection failed unexpectedly")
            self._emit(ErrorReported("internal", f"the connection failed unexpectedly ({type(exc).__name__})"))
            self._last_drop = "internal error"
        finally:
            for task in tasks:
                task.cancel()
        return welcomed

    async def _handshake(
        self, link: Link, incoming: IncomingQueue
    ) -> tuple[wire.Welcomed, list[wire.ConnectionEvent]]:
        """Read until ``welcome``; returns it and the events that came after it."""
        while True:
            events = await link.read_events(None)
            for index, event in enumerate(events):
                if isinstance(event, wire.Welcomed):
                    return event, events[index + 1 :]
                raise_if_dropped(event)
                self._dispatch(link, incoming, event)  # before welcome: notices and errors

    async def _read_loop(self, link: Link, incoming: IncomingQueue, events: list[wire.ConnectionEvent]) -> None:
        while True:
            for event in events:
                raise_if_dropped(event)
                try:
                    self._dispatch(link, incoming, event)
                except SecurechatError as exc:
                    self._emit(ErrorReported("bad_server_frame", str(exc)))
                except Exception:  # never let a server frame crash the session
                    log.exception("failed to handle a %r frame", event.frame_type)
                    self._emit(ErrorReported("internal", f"could not handle a {event.frame_type!r} frame"))
            events = await link.read_events(self.silence_timeout)

    def _dispatch(self, link: Link, incoming: IncomingQueue, event: wire.ConnectionEvent) -> None:
        match event:
            case wire.Notice(code, message, fatal):
                self._emit(ErrorReported(code, message, fatal))
            case wire.MessageFrame():
                incoming.offer(event)
            case wire.KeyAnswer(name=name, rid=rid):
                self._requests.answer(event, rid, "lookup", name)
            case wire.UsersAnswer(users, more, rid):
                self._requests.answer(page := UsersListed(tuple(UserEntry(*u) for u in users), more), rid, "list", None)
                self._emit(page)
            case wire.PresencePush(name, online):
                self._emit(PresenceChanged(name, online))
            case wire.AckFrame():
                self._outbox.on_ack(event)
            case wire.RoomFrame():
                self._on_room_frame(event)
            case wire.ServerError(error):
                self._on_error(link, error)

    def _on_error(self, link: Link, error: ServerErrorReply) -> None:
        if self._requests.fail(error) and not error.fatal:
            return  # the caller of the request gets it
        entry = self._outbox.entry(error.rid)
        kept = entry is not None and not error.fatal and self._outbox.on_send_error(link, entry, error.code)
        self._emit(ErrorReported(error.code, error.message, error.fatal, entry.msg_id if entry else None, kept))

    def _on_room_frame(self, event: wire.RoomFrame) -> None:
        """An answer goes to its request; ``room_sent`` to the outbox; a pushed change to the rooms, in a task."""
        room = event.frame.get("room")
        if event.kind == "room_sent":
            self._outbox.on_room_sent(event.frame)
            self._background(self.rooms.refresh(event.frame["room"], event.frame["seq"]))
        elif event.rid is not None:
            self._requests.answer(event, event.rid, "rooms" if event.kind == "room_list" else "room", room)
        elif event.kind == "room_update":
            self._background(self.rooms.on_push(event))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pinger(self, link: Link) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            link.send({"type": "ping"})

    # --- requests --------------------------------------------------------------------------

    async def _connection(self, timeout: float) -> Link:
        if self._closing:
            raise SessionClosed("the session is closed")
        if self._conn is None:
            await self.wait_online(timeout)
        link = self._conn
        if link is None:
            raise SessionClosed(f"not connected to the server at {self.host}:{self.port}")
        return link

    async def lookup(self, name: str) -> ContactInfo:
        """Ask the server for ``name``'s key; pin it on first sight, alert if it changed (trust ``changed``).
        Raises :class:`ServerErrorReply` (``unknown_user``), :class:`SessionClosed`, :class:`BadKey`."""
        name = parse_typed_name(name)
        link = await self._connection(self.request_timeout)
        frame = {"type": "lookup", "name": name}
        answer: wire.KeyAnswer = await self._requests.ask(link, frame, "lookup", name, self.request_timeout)
        if answer.name != name:
            raise BadRequest(f"asked for the key of '{name}', the server answered for '{answer.name}'")
        return self._contacts.presented(name, answer.pubkey)

    def unacknowledged(self) -> int:
        """How many own messages the server has not acknowledged yet (they stay in the outbox)."""
        return len(self._outbox)

    async def list_users(self, after: str = "", prefix: str = "") -> UsersListed:
        """One page of the directory after ``after``, within ``prefix`` (also emitted); raises like :meth:`lookup`."""
        link = await self._connection(self.request_timeout)
        frame = {"type": "list", **({"after": after} if after else {}), **({"prefix": prefix} if prefix else {})}
        return await self._requests.ask(link, frame, "list", None, self.request_timeout)  # type: ignore[no-any-return]

    async def send(self, to: str, text: str) -> str:
        """Seal and send to a name or a room; returns the message id. Queued in the outbox while offline.
        The first message to someone looks up and pins their key; :class:`KeyChanged` while a change waits."""
        return await self._outbox.send(parse_typed_target(to), text)
