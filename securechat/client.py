"""The client session: one authenticated connection to a server, kept alive.

:class:`ClientSession` implements :class:`securechat.events.SessionAPI`. It
shuttles bytes between a TCP connection and the sans-I/O pieces
(:class:`~securechat.protocol.FrameDecoder`, :mod:`securechat.crypto`) and the
client's persistent state (:class:`~securechat.keystore.KeyStore`), and tells
front ends what happened through immutable events. It never imports a UI.

Connection life cycle::

    connecting -> (hello, challenge, auth, welcome) -> online
    online --(EOF, framing error, silence, fatal error)--> reconnecting (backoff) -> connecting
    a fatal error that retrying cannot fix (name_taken, auth_failed, replaced, ...)
        -> offline, and run() raises ServerErrorReply
    close() -> offline, run() returns

Anything a hostile or broken server sends is validated first; a bad frame is
reported as :class:`~securechat.events.ErrorReported` and skipped, a framing
error drops the connection (and we reconnect). Nothing a server sends can
make the session raise.

Choices where protocol v1 is silent:

- A rejected envelope is confirmed with ``received`` too (and shown as
  :class:`~securechat.events.MessageRejected`): a server must not redeliver an
  envelope we will never accept, forever.
- Keys are looked up (and pinned on first use) when someone is first written to
  or first heard from; a pinned contact is not looked up again on every send.
  A message that fails the signature check against a pinned key triggers a
  lookup: if the server now presents another key, the rejection says
  ``key_changed`` and a :class:`~securechat.events.KeyChangedAlert` is emitted.
  While a change is pending, messages from that name are rejected
  (``key_changed``) and sends to it raise :class:`~securechat.errors.KeyChanged`.
- ``send`` frames carry ``rid`` = the envelope id, so a server error about a
  send names the message. ``unknown_user``/``bad_request``/``invalid_name``
  drop it from the outbox (history status ``failed``); ``rate_limited``,
  ``queue_full`` and ``internal`` retry it on the same connection after a
  capped, jittered pause; everything left is resent after any reconnect.
- ``ack`` ``queued`` and ``delivered`` both remove the outbox entry; a later
  ``delivered`` still updates the history status (never back to ``queued``).
- Fatal codes a reconnect cannot cure (``name_taken``, ``auth_failed``,
  ``bad_key``, ``invalid_name``, ``version_unsupported``, ``replaced``) end
  :meth:`ClientSession.run` with :class:`~securechat.errors.ServerErrorReply`;
  any other drop reconnects with capped exponential backoff and jitter.
- Silence: if no frame arrives for ``silence_timeout`` seconds (default
  ``2 * ping_interval + 5``) the connection is considered dead and replaced.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from . import crypto
from .encoding import b64decode, b64encode
from .envelope import ParsedEnvelope, check_addressing, is_message_id, is_timestamp, parse_envelope
from .errors import (
    BadRequest,
    BadSignature,
    EnvelopeRejected,
    KeyChanged,
    MessageTooLong,
    ProtocolError,
    SecurechatError,
    SenderKeyChanged,
    ServerErrorReply,
    SessionClosed,
    UnknownSender,
)
from .events import (
    Acked,
    ConnectionChanged,
    ContactPinned,
    ErrorReported,
    EventListener,
    KeyChangedAlert,
    MessageReceived,
    MessageRejected,
    MessageSent,
    PresenceChanged,
    Ready,
    SessionEvent,
    UserEntry,
    UsersListed,
)
from .keystore import KeyStore, OutboxEntry, Pin
from .names import is_valid_name, parse_typed_name
from .protocol import (
    DEFAULT_MAX_FRAME,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    FrameDecoder,
    encode_frame,
    validate_server_frame,
)
from .records import ContactInfo, HistoryEntry

log = logging.getLogger(__name__)

# Fatal codes that a reconnect cannot cure: stop and tell the user.
PERMANENT_CODES: Final = frozenset(
    {"name_taken", "auth_failed", "bad_key", "invalid_name", "version_unsupported", "replaced"}
)
# Send failures after which the message can never be delivered as sealed.
UNDELIVERABLE_CODES: Final = frozenset({"unknown_user", "bad_request", "invalid_name"})
# Send failures worth retrying on the same connection after a pause.
RETRY_CODES: Final = frozenset({"rate_limited", "queue_full", "internal"})
READ_CHUNK: Final = 65536
MAX_PENDING_INCOMING: Final = 1000
# Envelope bytes waiting for the worker: a server flooding 1 MiB envelopes while the
# worker waits on a lookup would otherwise hold up to MAX_PENDING_INCOMING MiB.
MAX_PENDING_INCOMING_BYTES: Final = 16 * 2**20


def precheck_envelope(envelope: object, recipient: str, frame_sender: str | None = None) -> ParsedEnvelope:
    """Checks 0 to 3 of docs/protocol.md section 7, which need no sender key.

    Raises the same :class:`~securechat.errors.EnvelopeRejected` subclasses as
    :func:`securechat.crypto.open_envelope`, so a key is fetched only for an
    envelope that could be accepted.
    """
    parsed = parse_envelope(envelope)
    check_addressing(parsed, recipient, frame_sender)
    return parsed


class _Dropped(Exception):
    """The connection is unusable; reconnect."""


class _Permanent(Exception):
    def __init__(self, error: ServerErrorReply) -> None:
        super().__init__(str(error))
        self.error = error


def _addressable(frame: Mapping[str, Any]) -> bool:
    """A ``message`` frame we can answer ``received`` to: valid ``from`` and envelope ``id``."""
    envelope = frame.get("envelope")
    return is_valid_name(frame.get("from")) and isinstance(envelope, dict) and is_message_id(envelope.get("id"))


def _envelope_size(frame: Mapping[str, Any]) -> int:
    """About the memory a queued ``message`` frame holds: its envelope's string fields."""
    envelope = frame.get("envelope")
    if not isinstance(envelope, dict):
        return 0
    return sum(len(value) for value in envelope.values() if isinstance(value, str))


@dataclass(eq=False)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    decoder: FrameDecoder
    frames: collections.deque[dict[str, Any]] = field(default_factory=collections.deque)
    incoming: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(MAX_PENDING_INCOMING)
    )
    fatal: ServerErrorReply | None = None
    incoming_bytes: int = 0

    def write(self, frame: Mapping[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode_frame(frame))


@dataclass
class _Pending:
    kind: str
    name: str | None
    future: asyncio.Future[dict[str, Any]]


class ClientSession:
    """One user's session with a server; see the module docstring for its life cycle."""

    def __init__(
        self,
        store: KeyStore,
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
    ) -> None:
        self._store = store
        self._identity = store.require_identity()
        self.host = host
        self.port = port
        self.ping_interval = ping_interval
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_frame = max_frame
        # No frame at all for this long (pongs included): the connection is dead.
        self.silence_timeout = silence_timeout if silence_timeout is not None else ping_interval * 2 + 5
        self._listeners: list[EventListener] = []
        self._conn: _Connection | None = None  # set once welcomed
        self._socket: _Connection | None = None  # set from connect to close
        self._online = asyncio.Event()
        self._stop = asyncio.Event()
        self._outbox_shrunk = asyncio.Event()
        self._closing = False
        self._running = False
        self._done = asyncio.Event()
        self._pending: dict[str, _Pending] = {}
        self._rids = itertools.count(1)
        self._retry_attempts: dict[str, int] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._last_drop = ""

    # --- SessionAPI: identity and listeners ------------------------------------------

    @property
    def name(self) -> str:
        return self._identity.name

    @property
    def fingerprint(self) -> str:
        return self._identity.fingerprint

    @property
    def store(self) -> KeyStore:
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
                log.exception("event listener failed on %r", event)

    # --- SessionAPI: run / close --------------------------------------------------------

    async def run(self) -> None:
        """Connect, authenticate and serve until :meth:`close`; reconnects with backoff.

        Raises :class:`ServerErrorReply` when the server refuses us in a way a
        reconnect cannot fix (``name_taken``, ``auth_failed``, ``replaced``, ...).
        """
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
                except _Permanent as exc:
                    self._emit(ConnectionChanged("offline", detail=str(exc.error)))
                    raise exc.error from None
                if self._closing:
                    break
                if welcomed:
                    attempt = 0
                delay = self._backoff(attempt)
                attempt += 1
                self._emit(ConnectionChanged("reconnecting", retry_in=delay, detail=self._last_drop))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
            self._emit(ConnectionChanged("offline"))
        finally:
            self._running = False
            self._done.set()

    def _backoff(self, attempt: int) -> float:
        """Capped exponential backoff with jitter (half to full of the step)."""
        step: float = min(self.backoff_max, self.backoff_initial * 2.0 ** min(attempt, 30))
        return step * random.uniform(0.5, 1.0)

    async def close(self) -> None:
        """Stop reconnecting and close the connection (pending sends stay in the outbox)."""
        self._closing = True
        self._stop.set()
        conn = self._socket
        if conn is not None:
            conn.writer.close()
        for task in list(self._background):
            task.cancel()
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
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            self._outbox_shrunk.clear()
            if len(self._store.outbox) == 0:
                return True
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._outbox_shrunk.wait(), remaining)
            except TimeoutError:
                return len(self._store.outbox) == 0

    # --- one connection -----------------------------------------------------------------

    async def _connect_and_serve(self) -> bool:
        """Run one connection to its end; True if it got as far as ``welcome``."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=READ_CHUNK * 2), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            self._last_drop = f"cannot connect to {self.host}:{self.port}: {exc or type(exc).__name__}"
            return False
        conn = _Connection(reader, writer, FrameDecoder(self.max_frame))
        self._socket = conn
        welcomed = False
        tasks: list[asyncio.Task[None]] = []
        try:
            if self._closing:
                return False
            welcome = await asyncio.wait_for(self._handshake(conn), self.request_timeout)
            welcomed = True
            self._conn = conn
            self._online.set()
            self._emit(Ready(self.name, self.fingerprint, bool(welcome.get("new") is True)))
            self._emit(ConnectionChanged("online"))
            tasks.append(asyncio.create_task(self._incoming_worker(conn)))
            tasks.append(asyncio.create_task(self._pinger(conn)))
            for entry in self._store.outbox.entries():
                self._write_send(conn, entry.recipient, entry.envelope)
            await self._read_loop(conn)
        except TimeoutError:
            self._last_drop = "the server did not finish the handshake in time"
        except _Dropped as exc:
            self._last_drop = str(exc)
        except (ConnectionError, OSError) as exc:
            self._last_drop = f"connection lost: {exc}"
        except Exception as exc:  # a bug here must cost a reconnect, not the session
            log.exception("connection failed unexpectedly")
            self._emit(
                ErrorReported("internal", f"the connection failed unexpectedly ({type(exc).__name__})")
            )
            self._last_drop = "internal error"
        finally:
            self._online.clear()
            self._conn = None
            self._socket = None
            for task in tasks:
                task.cancel()
            for pending in list(self._pending.values()):
                if not pending.future.done():
                    pending.future.set_exception(SessionClosed("the connection to the server was lost"))
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
        if conn.fatal is not None and conn.fatal.code in PERMANENT_CODES:
            raise _Permanent(conn.fatal)
        return welcomed

    async def _next_frame(self, conn: _Connection, timeout: float | None) -> dict[str, Any]:
        # Feeding b"" first surfaces a framing error the decoder held back while it
        # returned the good frames that preceded it in the same chunk.
        data = b""
        while True:
            if conn.frames:
                return conn.frames.popleft()
            try:
                conn.frames.extend(conn.decoder.feed(data))
            except ProtocolError as exc:
                self._emit(ErrorReported(exc.code, f"bad frame from the server: {exc.detail}", fatal=True))
                raise _Dropped(f"bad frame from the server ({exc.code})") from None
            if conn.frames:
                return conn.frames.popleft()
            try:
                data = await asyncio.wait_for(conn.reader.read(READ_CHUNK), timeout)
            except TimeoutError:
                raise _Dropped(f"nothing heard from the server for {timeout:g} s") from None
            if not data:
                if conn.fatal is not None:
                    raise _Dropped(f"the server closed the connection ({conn.fatal.code})")
                raise _Dropped("the server closed the connection")

    async def _handshake(self, conn: _Connection) -> dict[str, Any]:
        identity = self._identity
        conn.write(
            {"type": "hello", "version": PROTOCOL_VERSION, "name": self.name, "pubkey": identity.public_pem}
        )
        challenge = await self._expect(conn, "challenge")
        try:
            server_id = b64decode(challenge["server_id"])
            nonce = b64decode(challenge["nonce"])
        except ValueError:
            self._emit(ErrorReported("bad_server_frame", "the server's challenge is not valid base64"))
            raise _Dropped("bad challenge from the server") from None
        signature = crypto.sign_auth(identity.private_key, server_id, self.name, nonce)
        conn.write({"type": "auth", "signature": b64encode(signature)})
        welcome = await self._expect(conn, "welcome")
        if welcome["name"] != self.name:
            self._emit(ErrorReported("bad_server_frame", f"the server welcomed '{welcome['name']}', not us"))
            raise _Dropped("welcome for another name")
        if welcome["fingerprint"] != self.fingerprint:
            self._emit(
                ErrorReported("bad_server_frame", "the server reports a different fingerprint for our key")
            )
        return welcome

    async def _expect(self, conn: _Connection, kind: str) -> dict[str, Any]:
        while True:
            frame = await self._next_frame(conn, None)
            if not self._valid(frame):
                continue
            if frame["type"] == kind:
                return frame
            if frame["type"] == "error":
                self._on_error(conn, frame)
                if conn.fatal is not None:
                    raise _Dropped(f"the server refused us: {conn.fatal}")
            # Anything else before welcome is ignored (forward compatibility).

    async def _read_loop(self, conn: _Connection) -> None:
        while True:
            frame = await self._next_frame(conn, self.silence_timeout)
            if frame["type"] == "message" and _addressable(frame):
                # The envelope's own checks run in the worker, so a bad one is shown
                # as rejected (and confirmed) rather than redelivered forever.
                self._queue_message(conn, frame)
                continue
            if not self._valid(frame):
                continue
            try:
                self._dispatch(conn, frame)
            except SecurechatError as exc:
                self._emit(ErrorReported("bad_server_frame", str(exc)))
            except Exception:  # never let a server frame crash the session
                log.exception("failed to handle a %r frame", frame.get("type"))
                self._emit(
                    ErrorReported("internal", f"could not handle a {str(frame.get('type'))[:40]!r} frame")
                )

    def _valid(self, frame: dict[str, Any]) -> bool:
        try:
            validate_server_frame(frame)
        except ProtocolError as exc:
            self._emit(ErrorReported("bad_server_frame", f"{str(frame.get('type'))[:40]}: {exc.detail}"))
            return False
        return True

    async def _pinger(self, conn: _Connection) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            conn.write({"type": "ping"})

    # --- frames from the server ----------------------------------------------------------

    def _dispatch(self, conn: _Connection, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "pong":
            return
        if kind == "key":
            self._resolve(frame, "lookup", frame["name"])
        elif kind == "users":
            users = tuple(UserEntry(u["name"], u["online"]) for u in frame["users"])
            self._resolve(frame, "list", None)
            self._emit(UsersListed(users))
        elif kind == "presence":
            self._emit(PresenceChanged(frame["name"], frame["online"]))
        elif kind == "message":
            self._queue_message(conn, frame)
        elif kind == "ack":
            self._on_ack(frame)
        elif kind == "error":
            self._on_error(conn, frame)
        # challenge/welcome after the handshake, and unknown types: ignored.

    def _queue_message(self, conn: _Connection, frame: dict[str, Any]) -> None:
        size = _envelope_size(frame)
        if conn.incoming_bytes + size > MAX_PENDING_INCOMING_BYTES and not conn.incoming.empty():
            # Not confirmed, so the server redelivers it after the next reconnect.
            log.warning("dropping an incoming message: %d bytes are waiting", conn.incoming_bytes)
            return
        try:
            conn.incoming.put_nowait(frame)
        except asyncio.QueueFull:
            # Not confirmed, so the server redelivers it after the next reconnect.
            log.warning("dropping an incoming message: %d are waiting", MAX_PENDING_INCOMING)
            return
        conn.incoming_bytes += size

    def _resolve(self, frame: dict[str, Any], kind: str, name: str | None) -> None:
        rid = frame.get("rid")
        pending = self._pending.get(rid) if isinstance(rid, str) else None
        if pending is None or pending.kind != kind:
            # A server that does not echo rid: the oldest request of this kind (and name).
            pending = next(
                (
                    p
                    for p in self._pending.values()
                    if p.kind == kind and p.name == name and not p.future.done()
                ),
                None,
            )
        if pending is not None and not pending.future.done():
            pending.future.set_result(frame)

    def _on_error(self, conn: _Connection, frame: dict[str, Any]) -> None:
        code, message = frame["code"], frame["message"]
        fatal = frame.get("fatal") is True
        rid = frame.get("rid") if isinstance(frame.get("rid"), str) else None
        error = ServerErrorReply(code, message, fatal=fatal, rid=rid)
        if fatal:
            conn.fatal = error
        pending = self._pending.get(rid) if rid is not None else None
        if pending is not None and not pending.future.done():
            pending.future.set_exception(error)
            if not fatal:
                return
        entry = self._store.outbox.get(rid) if rid is not None else None
        self._emit(ErrorReported(code, message, fatal, entry.msg_id if entry is not None else None))
        if entry is None or fatal:
            return
        if code in UNDELIVERABLE_CODES:
            self._store.outbox.remove(entry.msg_id)
            self._store.history.set_status(entry.recipient, entry.msg_id, "failed")
            self._outbox_shrunk.set()
        elif code in RETRY_CODES:
            self._schedule_retry(conn, entry)

    def _schedule_retry(self, conn: _Connection, entry: OutboxEntry) -> None:
        attempt = self._retry_attempts.get(entry.msg_id, 0)
        self._retry_attempts[entry.msg_id] = attempt + 1
        delay = min(self.backoff_max, 1.0 * 2**attempt) * random.uniform(0.5, 1.0)

        async def retry() -> None:
            await asyncio.sleep(delay)
            if self._conn is conn and self._store.outbox.get(entry.msg_id) is not None:
                self._write_send(conn, entry.recipient, entry.envelope)

        task = asyncio.create_task(retry())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _on_ack(self, frame: dict[str, Any]) -> None:
        msg_id, to, status = frame["id"], frame["to"], frame["status"]
        entry = self._store.outbox.remove(msg_id)
        peer = entry.recipient if entry is not None else to
        current = self._store.history.get(peer, "out", msg_id)
        if entry is None and current is None:
            log.info("ignoring an ack for a message we did not send: %s", msg_id)
            return
        if current is not None and not (current.status == "delivered" and status == "queued"):
            self._store.history.set_status(peer, msg_id, status)
        self._retry_attempts.pop(msg_id, None)
        if entry is not None:
            self._outbox_shrunk.set()
        self._emit(Acked(msg_id, peer, status))

    async def _incoming_worker(self, conn: _Connection) -> None:
        # One at a time and in order; opening may need a lookup round trip,
        # which the read loop answers, so this cannot run inside the read loop.
        while True:
            frame = await conn.incoming.get()
            conn.incoming_bytes -= _envelope_size(frame)
            try:
                await self._on_message(conn, frame)
            except SessionClosed:
                continue  # unconfirmed: the server redelivers it after a reconnect
            except Exception:
                log.exception("failed to handle an incoming message")
                self._emit(ErrorReported("internal", "could not handle an incoming message"))

    async def _on_message(self, conn: _Connection, frame: dict[str, Any]) -> None:
        sender: str = frame["from"]
        envelope: dict[str, Any] = frame["envelope"]
        msg_id: str = envelope["id"]
        server_ts = frame.get("server_ts") if is_timestamp(frame.get("server_ts")) else None
        received = {"type": "received", "id": msg_id, "from": sender}
        if (sender, msg_id) in self._store.accepted:
            # A replay or a redelivery (our earlier `received` was lost): confirm, show
            # nothing, and spend no RSA operation on it.
            conn.write(received)
            return
        payload = crypto.encode_payload(envelope)
        try:
            opened = await self._open(sender, envelope)
        except EnvelopeRejected as exc:
            self._emit(MessageRejected(sender, msg_id, exc.reason, exc.detail, payload))
            # Confirmed anyway: a server must not redeliver an envelope we will never accept.
            conn.write(received)
            return
        # One transaction: accepted without its history row would lose the message on a crash.
        self._store.history.add(HistoryEntry(sender, "in", msg_id, opened.ts, opened.text), accepted=True)
        self._emit(MessageReceived(sender, msg_id, opened.ts, opened.text, payload, server_ts))
        conn.write(received)

    async def _open(self, sender: str, envelope: dict[str, Any]) -> crypto.OpenedMessage:
        """The section-5 checks in order (docs/protocol.md section 7), fetching the key at step 4."""
        parsed = precheck_envelope(envelope, self.name, sender)  # checks 0-3 need no key
        pin = self._store.pins.get(sender)
        first_contact = pin is None
        if pin is None:
            try:
                await self.lookup(sender)
            except SessionClosed:
                raise
            except ServerErrorReply as exc:
                raise UnknownSender(f"the server has no key for '{sender}' ({exc.code})") from None
            except SecurechatError as exc:
                raise UnknownSender(f"the server gave no usable key for '{sender}' ({exc})") from None
            pin = self._store.pins.get(sender)
            if pin is None:
                raise UnknownSender(f"no key for '{sender}'")
        if pin.trust == "changed":
            self._alert(pin)
            raise SenderKeyChanged(f"the key of '{sender}' changed; trust or verify the new key first")
        try:
            return crypto.open_parsed(self._identity.private_key, pin.public_key(), parsed)
        except BadSignature:
            # Maybe they have a new key: ask the server and say so rather than "bad signature".
            if not first_contact and await self._changed_on_server(sender):
                raise SenderKeyChanged(
                    f"the message is not signed by the pinned key of '{sender}', and the server now "
                    "presents a different key"
                ) from None
            raise

    async def _changed_on_server(self, name: str) -> bool:
        try:
            info = await self.lookup(name)
        except SessionClosed:
            raise
        except SecurechatError:
            return False
        return info.trust == "changed"

    def _alert(self, pin: Pin) -> None:
        self._emit(KeyChangedAlert(pin.name, pin.fingerprint, pin.pending_fingerprint or ""))

    # --- requests --------------------------------------------------------------------------

    async def _connection(self, timeout: float) -> _Connection:
        if self._closing:
            raise SessionClosed("the session is closed")
        if self._conn is None:
            await self.wait_online(timeout)
        conn = self._conn
        if conn is None:
            raise SessionClosed(f"not connected to the server at {self.host}:{self.port}")
        return conn

    async def _request(self, frame: dict[str, Any], kind: str, name: str | None) -> dict[str, Any]:
        conn = await self._connection(self.request_timeout)
        rid = f"{kind}-{next(self._rids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = _Pending(kind, name, future)
        try:
            conn.write({**frame, "rid": rid})
            return await asyncio.wait_for(future, self.request_timeout)
        except TimeoutError:
            raise SessionClosed(
                f"the server did not answer '{kind}' within {self.request_timeout:g} s"
            ) from None
        finally:
            self._pending.pop(rid, None)

    async def lookup(self, name: str) -> ContactInfo:
        """Ask the server for ``name``'s key; pin it on first sight, alert if it changed.

        Raises :class:`ServerErrorReply` (``unknown_user``), :class:`SessionClosed`
        when offline, :class:`BadKey` if the server presents an unusable key.
        A changed key does not raise: the returned info has trust ``changed``.
        """
        name = parse_typed_name(name)
        frame = await self._request({"type": "lookup", "name": name}, "lookup", name)
        if frame["name"] != name:
            raise BadRequest(f"asked for the key of '{name}', the server answered for '{frame['name']}'")
        existed = self._store.pins.get(name) is not None
        try:
            pin = self._store.pins.pin(name, frame["pubkey"])
        except KeyChanged:
            changed = self._store.pins.get(name)
            if changed is not None:
                self._alert(changed)
        else:
            if not existed:
                self._emit(ContactPinned(name, pin.fingerprint, pin.trust))
        return self._store.pins.info(name)

    def unacknowledged(self) -> int:
        """How many own messages the server has not acknowledged yet (they stay in the outbox)."""
        return len(self._store.outbox)

    async def list_users(self) -> None:
        """Ask the server for the directory; the answer arrives as :class:`UsersListed`."""
        conn = await self._connection(self.request_timeout)
        conn.write({"type": "list", "rid": f"list-{next(self._rids)}"})

    async def send(self, to: str, text: str) -> str:
        """Seal and send; returns the message id. Queued in the outbox while offline.

        The first message to someone looks up and pins their key (so that one
        needs a connection). Raises :class:`KeyChanged` while a changed key
        of ``to`` is not trusted.
        """
        to = parse_typed_name(to)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("the text holds an unpaired surrogate and cannot be sent as UTF-8") from None
        pin = self._store.pins.get(to)
        if pin is None:
            await self.lookup(to)
            pin = self._store.pins.get(to)
            if pin is None:
                raise SessionClosed(f"could not get the key of '{to}'")
        if pin.trust == "changed":
            self._alert(pin)
            raise KeyChanged(to, pin.fingerprint, pin.pending_fingerprint or "")
        envelope = crypto.seal_envelope(self._identity.private_key, pin.public_key(), self.name, to, text)
        frame = {"type": "send", "to": to, "envelope": envelope, "rid": envelope["id"]}
        size = len(encode_frame(frame)) - HEADER_SIZE
        if size > self.max_frame:
            raise MessageTooLong(size, self.max_frame)
        msg_id: str = envelope["id"]
        ts: int = envelope["ts"]
        self._store.outbox.add(to, envelope)
        self._store.history.add(HistoryEntry(to, "out", msg_id, ts, text, "sending"))
        self._emit(MessageSent(msg_id, to, ts, text, crypto.encode_payload(envelope)))
        conn = self._conn
        if conn is not None:
            self._write_send(conn, to, envelope)
            with contextlib.suppress(ConnectionError, OSError):
                await conn.writer.drain()
        return msg_id

    def _write_send(self, conn: _Connection, to: str, envelope: dict[str, Any]) -> None:
        conn.write({"type": "send", "to": to, "envelope": envelope, "rid": envelope["id"]})

    # --- contacts and history (local) ---------------------------------------------------------

    def contact(self, name: str) -> ContactInfo:
        return self._store.pins.info(parse_typed_name(name))

    def trust(self, name: str) -> None:
        """Accept the pending changed key of ``name`` (after a :class:`KeyChangedAlert`)."""
        name = parse_typed_name(name)
        before = self._store.pins.get(name)
        pin = self._store.pins.trust(name)
        if pin is not None and before is not None and before.trust == "changed":
            self._emit(ContactPinned(name, pin.fingerprint, pin.trust))

    def verify(self, name: str, fingerprint: str) -> bool:
        """Mark ``name`` verified if ``fingerprint`` matches the pinned key; False if not."""
        name = parse_typed_name(name)
        before = self._store.pins.get(name)
        ok = self._store.pins.verify(name, fingerprint)
        pin = self._store.pins.get(name)
        if (
            ok
            and pin is not None
            and (before is None or before.trust != "verified" or before.fingerprint != pin.fingerprint)
        ):
            self._emit(ContactPinned(name, pin.fingerprint, pin.trust))
        return ok

    def history(self, peer: str, limit: int = 200) -> list[HistoryEntry]:
        """The last ``limit`` entries of the conversation with ``peer``, oldest first."""
        return self._store.history.recent(parse_typed_name(peer), limit)


async def finish_session(session: ClientSession, run_task: asyncio.Task[None], timeout: float = 10.0) -> bool:
    """Close ``session`` and wait (bounded) for its ``run()`` task; True if ``run()`` failed.

    The front ends share this ending: a :class:`SecurechatError` from ``run()``
    was already shown to the user as an event; anything else is logged here.
    """
    await session.close()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait({run_task}, timeout=timeout)
    if not run_task.done() or run_task.cancelled():
        return False
    error = run_task.exception()
    if error is None:
        return False
    if not isinstance(error, SecurechatError):
        log.error("the session failed", exc_info=error)
    return True
