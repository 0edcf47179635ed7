"""The securechat relay: an asyncio TCP server speaking protocol v1.

The server only moves bytes and keeps state: framing, schemas and the session
state table are :mod:`securechat.protocol`, signatures :mod:`securechat.crypto`,
durable state a :class:`~securechat.store.ServerStore` driven off the event loop.

Delivery model. A message for a connected recipient is serialised once,
written at once and remembered as *in flight* on the recipient's connection
until the recipient confirms it with ``received``; a message for an offline
recipient goes to the store first and is acked ``queued``. When a session
starts, its backlog is streamed from the store oldest first, in batches;
messages arriving meanwhile are held in memory and written after the backlog,
so order is kept. Whatever is in flight and unconfirmed when a connection ends
goes back to the store (backlog messages never left it).

Cost model. Frames written to one connection in one loop iteration leave in
one transport write; offline sends of one iteration share one SQLite commit
(the connection keeps reading while they are stored); ``ack`` frames are built
without the JSON encoder; presence changes are pushed in 50 ms batches, only
to the sessions interested in the name; the online path touches no database.
Each connection is one :class:`asyncio.Protocol` object handling frames in
``data_received``: a task exists only while a handler waits (the store), and
handshake and idle timeouts are one periodic sweep, so an idle session holds
no task, no timer and no stream objects.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Final

from ..clock import now_ms
from ..crypto import AUTH_NONCE_SIZE, fingerprint, load_public_key_pem, public_key_pem, verify_auth
from ..encoding import b64decode, b64encode
from ..errors import BadKey, ProtocolError, QueueFull
from ..protocol import (
    HEADER,
    FrameDecoder,
    SessionState,
    check_transition,
    encode_frame,
    error_frame,
    request_id,
    validate_client_frame,
)
from .config import ServerConfig
from .sqlite import SqliteStore
from .store import QueuedMessage, Registration, ServerStore

log = logging.getLogger("securechat.server")

READ_CHUNK: Final = 64 * 1024
BACKLOG_BATCH: Final = 500
# After a fatal error the server stops writing (FIN) and discards input for at
# most this long, so the peer reads the error frame instead of a TCP reset.
LINGER_SECONDS: Final = 2.0
MAX_LINGERING_REFUSALS: Final = 256
PRESENCE_BATCH_SECONDS: Final = 0.05
# asyncio's default listen backlog (100) overflows under a login burst: the kernel drops SYNs
# and clients back off for 1, 3, 7, 15 s. The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG: Final = 4096
# Handshake and idle timeouts are checked by one periodic sweep, at least this often.
SWEEP_INTERVAL: Final = 1.0
EXPIRE_INTERVAL: Final = 3600.0
# Frames written in one loop iteration go out in one transport write, up to this many bytes.
COALESCE_LIMIT: Final = 64 * 1024
# Before `welcome` a connection may hold at most this many undecoded bytes. The largest
# legitimate handshake frame is a hello with a 16 KiB PEM; without this bound every
# anonymous connection could pin a max_frame body for the whole handshake timeout.
PREAUTH_BUFFER_LIMIT: Final = 64 * 1024


def ack_frame(msg_id: str, to: str, status: str, rid: str | None) -> bytes:
    """The ``ack`` frame, built without a JSON encoder: it is one per message.

    ``msg_id`` (32 hex digits) and ``to`` (a valid name) were validated and need
    no escaping; ``rid`` may hold anything, so it goes through the encoder.
    """
    tail = "}" if rid is None else ',"rid":' + json.dumps(rid, ensure_ascii=False) + "}"
    body = f'{{"type":"ack","id":"{msg_id}","to":"{to}","status":"{status}"{tail}'.encode()
    return HEADER.pack(len(body)) + body


class _TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> bool:
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.stamp = now
        tokens = min(tokens, self.burst)
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


@dataclass(slots=True)
class _InFlight:
    """A message handed to a recipient connection and not yet confirmed."""

    sender: str
    msg_id: str
    server_ts: int
    frame: bytes
    created: float
    from_store: bool
    rid: str | None = None


class _Deferred:
    """A handler result the read loop may await later (after reading on), keeping order."""

    __slots__ = ("awaitable",)

    def __init__(self, awaitable: Awaitable[None]) -> None:
        self.awaitable = awaitable


async def _settle(deferred: list[Awaitable[None]]) -> None:
    """Await ``deferred`` in order and empty it."""
    while deferred:
        await deferred.pop(0)


class _Connection(asyncio.Protocol):
    """Per-connection state and the protocol of its socket; all of it is touched only on the event loop.

    Frames are handled straight from ``data_received``. Only a frame whose handler has to
    wait (the store, ...) starts a task, which then also takes, in order, the reads that
    arrive meanwhile (reading is paused past ``READ_CHUNK`` of them). An idle session holds
    no task, no timer and no stream objects: this object, its decoder and its buckets.
    """

    __slots__ = (
        "bucket", "closing", "decoder", "drain_waiter", "eof", "flushing", "hello_key", "hello_name",
        "inbox", "inbox_bytes", "inflight", "inflight_bytes", "ip", "last_frame", "linger", "lookups",
        "loop", "max_out", "name", "nonce", "out", "out_bytes", "paused", "peer", "pending", "rate_logged",
        "reason", "refused", "released", "replaced", "server", "started", "state", "task", "transport",
        "watch_all", "watching", "write_paused",
    )

    def __init__(self, server: ChatServer) -> None:
        cfg = server.config
        self.loop = asyncio.get_running_loop()
        now = self.loop.time()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.peer = "?"
        self.ip = "?"
        self.refused = False  # answered server_busy: input is discarded until EOF or the linger ends
        self.task: asyncio.Task[None] | None = None  # handling frames that had to wait
        self.inbox: list[bytes] = []  # reads that arrived while the task was busy
        self.inbox_bytes = 0
        self.paused = False
        self.eof = False  # EOF arrived while the task was busy
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.state = SessionState.AWAIT_HELLO
        self.decoder = FrameDecoder(cfg.max_frame)
        self.bucket = _TokenBucket(cfg.rate, cfg.burst, now)
        self.lookups = _TokenBucket(cfg.lookup_rate, max(1.0, cfg.lookup_rate), now)
        self.started = now
        self.last_frame = now
        self.linger: asyncio.TimerHandle | None = None
        self.name: str | None = None
        self.hello_name: str | None = None
        self.hello_key: Any = None
        self.nonce: bytes | None = None
        self.inflight: dict[tuple[str, str], _InFlight] = {}
        self.inflight_bytes = 0
        self.pending: list[tuple[str, str]] = []
        self.flushing = False
        self.closing = False  # a fatal error was sent or the connection is going away
        self.released = False  # routing state handed back (in-flight requeued)
        self.replaced = False
        self.rate_logged = False
        self.reason = "peer closed"
        self.max_out = cfg.max_outgoing_buffer
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.out: list[bytes] = []
        self.out_bytes = 0
        self.watching: set[str] | None = None  # names whose presence this session asked about
        self.watch_all = False  # it listed the directory: every name's presence

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server._accept(self)

    def data_received(self, data: bytes) -> None:
        if not self.closing:  # after a fatal error (or a refusal) input is discarded until EOF
            self.server._data(self, data)

    def eof_received(self) -> bool:
        return self.server._eof(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._lost(self, exc)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        """Wait until the transport's buffer is below its low-water mark; raise once the connection is gone."""
        if self.transport.is_closing():
            await asyncio.sleep(0)
            raise ConnectionResetError("connection lost")
        if not self.write_paused:
            return
        waiter = self.drain_waiter
        if waiter is None or waiter.done():
            waiter = self.drain_waiter = self.loop.create_future()
        await waiter

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the end of this loop iteration (one syscall for many frames)."""
        if self.transport.is_closing():
            return
        out = self.out
        out.append(data)
        self.out_bytes += len(data)
        if self.out_bytes >= COALESCE_LIMIT:
            self.flush()
        elif len(out) == 1:
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hand queued bytes to the transport; a peer that lets them pile up past the bound is dropped."""
        out = self.out
        if not out:
            return
        self.out = []
        self.out_bytes = 0
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(out[0] if len(out) == 1 else b"".join(out))
        if transport.get_write_buffer_size() > self.max_out and not self.closing:
            self.server._drop_slow(self)

    def buffered(self) -> int:
        """Bytes written to this connection and not yet sent."""
        return self.transport.get_write_buffer_size() + self.out_bytes

    def send(self, frame: dict[str, Any]) -> None:
        self.write(encode_frame(frame))

    def hand_out(self, key: tuple[str, str], entry: _InFlight) -> None:
        """Remember ``entry`` as handed to this connection until it is confirmed."""
        old = self.inflight.get(key)
        if old is not None:
            self.inflight_bytes -= len(old.frame)
        self.inflight[key] = entry
        self.inflight_bytes += len(entry.frame)

    def confirm(self, key: tuple[str, str]) -> _InFlight | None:
        entry = self.inflight.pop(key, None)
        if entry is not None:
            self.inflight_bytes -= len(entry.frame)
        return entry


class ChatServer:
    """The relay. ``start()`` binds, ``serve_forever()`` waits, ``close()`` shuts down cleanly."""

    def __init__(self, config: ServerConfig, store: ServerStore | None = None) -> None:
        config.validate()
        self.config = config
        self._store: ServerStore = store or SqliteStore(
            config.db_path,
            queue_limit=config.queue_limit,
            queue_bytes=config.queue_bytes,
            queue_ttl=config.queue_ttl,
        )
        self._server: asyncio.base_events.Server | None = None
        self._server_id = b""
        self._server_id_b64 = ""
        self._conns: set[_Connection] = set()
        self._per_ip: dict[str, int] = {}
        self._online: dict[str, _Connection] = {}
        # name -> key fingerprint; bindings never change, so this is safe to cache. Only the
        # fingerprint: the PEM (for `lookup`) is read from the store, keeping ~0.6 KiB per name out.
        self._fingerprints: dict[str, str] = {}
        self._deletes: list[tuple[str, str, str]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._refused: set[_Connection] = set()  # refused connections still lingering
        self._conns_gone: asyncio.Future[None] | None = None  # set when close() has seen every connection go
        self._presence: dict[str, bool] = {}
        self._watchers: dict[str, set[_Connection]] = {}  # name -> sessions interested in its presence
        self._watch_all: set[_Connection] = set()  # sessions that listed the directory
        self._presence_timer: asyncio.TimerHandle | None = None
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._stopped = asyncio.Event()
        self._closing = False
        self._port = 0

    # --- lifecycle --------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (the real one when the config asked for 0)."""
        return self._port

    async def start(self) -> None:
        """Open the store, expire old messages and bind the listening socket."""
        try:
            self._server_id = await self._store.server_id()
            self._server_id_b64 = b64encode(self._server_id)
            expired = await self._store.expire()
            if expired:
                log.info("expired %d queued messages older than the TTL", expired)
            self._server = await asyncio.get_running_loop().create_server(
                lambda: _Connection(self), self.config.host, self.config.port, backlog=LISTEN_BACKLOG
            )
        except BaseException:
            self._closing = True
            await self._store.close()
            self._stopped.set()
            raise
        sockets = self._server.sockets
        self._port = sockets[0].getsockname()[1] if sockets else self.config.port
        self._spawn(self._expire_loop())
        self._sweep_timer = asyncio.get_running_loop().call_later(self._sweep_interval(), self._sweep)
        log.info("listening on %s:%d", self.config.host, self._port)

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
        self._closing = True
        try:
            if self._server is not None:
                self._server.close()
            for conn in list(self._conns):
                conn.reason = "server shutting down"
                self._release(conn)
                conn.transport.close()
            for refused in list(self._refused):
                refused.transport.abort()
            if self._presence_timer is not None:
                self._presence_timer.cancel()
            if self._sweep_timer is not None:
                self._sweep_timer.cancel()
            for task in list(self._tasks):
                task.cancel()
            pending: list[asyncio.Future[Any]] = list(self._tasks) + list(self._handlers)
            if self._conns:  # closing transports flush what is buffered first
                self._conns_gone = asyncio.get_running_loop().create_future()
                pending.append(self._conns_gone)
            if pending:
                await asyncio.wait(pending, timeout=LINGER_SECONDS + 1)
            for conn in list(self._conns):
                conn.transport.abort()
            await asyncio.sleep(0)  # let the aborted connections' connection_lost run
            self._flush_deletes()
            await self._store.close()
            log.info("server stopped")
        finally:
            self._stopped.set()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
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

    # --- connections ------------------------------------------------------------------

    def _accept(self, conn: _Connection) -> None:
        """``connection_made``: admit the connection or refuse it with ``server_busy``."""
        transport = conn.transport
        peername = transport.get_extra_info("peername")
        ip = str(peername[0]) if peername else "?"
        conn.ip = ip
        conn.peer = f"{ip}:{peername[1]}" if peername else "?"
        cfg = self.config
        if self._closing or len(self._conns) >= cfg.max_connections or self._per_ip.get(ip, 0) >= cfg.max_per_ip:
            log.info("refused connection from %s: server busy", conn.peer)
            conn.refused = conn.closing = conn.released = True
            transport.write(encode_frame(error_frame("server_busy", "too many connections", fatal=True)))
            if len(self._refused) >= MAX_LINGERING_REFUSALS:  # a flood: no courtesy linger
                transport.close()
                return
            self._refused.add(conn)
            if transport.can_write_eof():
                try:
                    transport.write_eof()
                except OSError:
                    transport.abort()
                    return
            conn.linger = conn.loop.call_later(LINGER_SECONDS, self._end_refusal, conn)
            return
        self._conns.add(conn)
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1

    def _end_refusal(self, conn: _Connection) -> None:
        if conn.linger is not None:
            conn.linger.cancel()
            conn.linger = None
        transport = conn.transport
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    def _eof(self, conn: _Connection) -> bool:
        """``eof_received``: answer what was asked, then close (the transport stays open meanwhile)."""
        if conn.refused:
            self._end_refusal(conn)
        elif conn.task is not None:
            conn.eof = True  # the task closes when it is done
        else:
            self._finish(conn)
        return True

    def _finish(self, conn: _Connection) -> None:
        """The peer is done and every answer is written: stop routing to it and close."""
        self._release(conn)
        if conn.linger is not None:
            conn.linger.cancel()
            conn.linger = None
        conn.transport.close()

    def _lost(self, conn: _Connection, exc: Exception | None) -> None:
        """``connection_lost``: the bookkeeping that ends every connection."""
        if conn.linger is not None:
            conn.linger.cancel()
            conn.linger = None
        waiter, conn.drain_waiter = conn.drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("connection lost"))
        if conn.refused:
            self._refused.discard(conn)
            return
        if not conn.closing:
            conn.reason = "connection lost"
        self._release(conn)
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        ip = conn.ip
        left = self._per_ip.get(ip, 1) - 1
        if left > 0:
            self._per_ip[ip] = left
        else:
            self._per_ip.pop(ip, None)
        log.info(
            "connection %s%s closed after %.1fs: %s",
            conn.peer,
            f" ({conn.name})" if conn.name else "",
            conn.loop.time() - conn.started,
            conn.reason,
        )
        if not self._conns and self._conns_gone is not None and not self._conns_gone.done():
            self._conns_gone.set_result(None)

    def _data(self, conn: _Connection, data: bytes) -> None:
        """``data_received``: handle every complete frame now; a frame that must wait hands the rest to a task."""
        if conn.task is not None:  # earlier frames are still being handled: keep the order
            conn.inbox.append(data)
            conn.inbox_bytes += len(data)
            if conn.inbox_bytes >= READ_CHUNK and not conn.paused:
                conn.paused = True
                conn.transport.pause_reading()
            return
        decoder = conn.decoder
        try:
            frames = decoder.feed(data)
            now = conn.last_frame
            if frames:
                now = conn.last_frame = conn.loop.time()
            while frames:
                for i, frame in enumerate(frames):
                    pending = self._dispatch(conn, frame, now)
                    if pending is not None:
                        task = conn.loop.create_task(self._consume(conn, frames, i, pending, now))
                        conn.task = task
                        self._handlers.add(task)
                        task.add_done_callback(self._handlers.discard)
                        return
                    if conn.closing:
                        return
                # The decoder raises an error found after complete frames on the next call.
                frames = decoder.feed(b"")
            self._check_preauth(conn)
        except ProtocolError as exc:
            self._fatal(conn, exc.code, exc.detail)
        except Exception:  # noqa: BLE001 - logged with its traceback, the connection closed
            self._broken(conn)

    def _check_preauth(self, conn: _Connection) -> None:
        if conn.state is not SessionState.OPEN and conn.decoder.buffered > PREAUTH_BUFFER_LIMIT and not conn.closing:
            detail = f"frames before welcome are limited to {PREAUTH_BUFFER_LIMIT} bytes"
            self._fatal(conn, "frame_too_large", detail)

    def _broken(self, conn: _Connection) -> None:
        log.exception("unexpected failure on connection %s", conn.peer)
        conn.reason = "internal error"
        self._release(conn)
        conn.transport.close()

    async def _consume(
        self, conn: _Connection, frames: list[dict[str, Any]], i: int, pending: Any, now: float
    ) -> None:
        """Go on from ``frames[i]``, whose handler returned ``pending``; then the reads that came meanwhile."""
        decoder = conn.decoder
        data: bytes | None = None
        try:
            while True:
                deferred: list[Awaitable[None]] = []  # offline sends being stored, in order
                try:
                    if data is not None:
                        frames, i, pending = decoder.feed(data), -1, None
                        if frames:
                            now = conn.last_frame = conn.loop.time()
                    while True:
                        if pending is not None:
                            handler, pending = pending, None
                            if type(handler) is _Deferred:
                                deferred.append(handler.awaitable)
                            else:
                                await _settle(deferred)
                                await handler
                        if conn.closing:
                            break
                        i += 1
                        if i >= len(frames):
                            # The decoder raises an error found after complete frames on the next call.
                            frames, i = decoder.feed(b""), -1
                            if not frames:
                                break
                            continue
                        frame = frames[i]
                        # Answers go out in request order, except that a `send` refused at once
                        # may overtake the acks of earlier sends still being stored.
                        if deferred and frame["type"] != "send":
                            await _settle(deferred)
                        pending = self._dispatch(conn, frame, now)
                    self._check_preauth(conn)
                except ProtocolError as exc:
                    self._fatal(conn, exc.code, exc.detail)
                finally:
                    await _settle(deferred)
                if conn.closing or not conn.inbox:
                    break
                data = conn.inbox.pop(0)
                conn.inbox_bytes -= len(data)
        except (ConnectionError, OSError):
            if not conn.closing:
                conn.reason = "connection lost"
            self._release(conn)
            conn.transport.close()
        except Exception:  # noqa: BLE001 - logged with its traceback, the connection closed
            self._broken(conn)
        finally:
            conn.task = None
            conn.inbox.clear()
            conn.inbox_bytes = 0
            if conn.paused:
                conn.paused = False
                if not conn.transport.is_closing():
                    conn.transport.resume_reading()
            if conn.eof:
                self._finish(conn)

    def _sweep(self) -> None:
        """Time out unfinished handshakes and idle sessions: one periodic pass, no timer per connection."""
        self._sweep_timer = None
        if self._closing:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        handshake, idle = self.config.handshake_timeout, self.config.idle_timeout
        late = [
            conn
            for conn in self._conns
            if not conn.closing
            and (
                now - conn.last_frame >= idle
                if conn.state is SessionState.OPEN
                else now - conn.started >= handshake
            )
        ]
        for conn in late:
            if conn.closing:
                continue
            if conn.state is SessionState.OPEN:
                self._fatal(conn, "timeout", f"no frame for {idle:g} seconds")
            else:
                self._fatal(conn, "timeout", "the handshake did not finish in time")
        self._sweep_timer = loop.call_later(self._sweep_interval(), self._sweep)

    def _sweep_interval(self) -> float:
        # At most a quarter of the shorter timeout late, and at most a second.
        return min(SWEEP_INTERVAL, self.config.handshake_timeout / 4, self.config.idle_timeout / 4)

    def _fatal(self, conn: _Connection, code: str, message: str, rid: str | None = None) -> None:
        """Send a fatal error, stop routing to the connection and close it after a short linger."""
        if conn.closing:
            return
        log.info("fatal %s to %s%s: %s", code, conn.peer, f" ({conn.name})" if conn.name else "", message)
        conn.reason = f"fatal {code}"
        conn.send(error_frame(code, message, fatal=True, rid=rid))
        conn.flush()
        conn.closing = True
        self._release(conn)
        transport = conn.transport
        if not transport.is_closing() and transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:
                transport.abort()
        conn.linger = asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.abort)

    def _drop_slow(self, conn: _Connection) -> None:
        log.info(
            "dropping %s%s: outgoing buffer above %d bytes",
            conn.peer,
            f" ({conn.name})" if conn.name else "",
            self.config.max_outgoing_buffer,
        )
        conn.reason = "outgoing buffer over the limit"
        conn.closing = True
        conn.out = []
        conn.out_bytes = 0
        self._release(conn)
        conn.transport.abort()

    def _release(self, conn: _Connection) -> None:
        """Take the connection out of routing; its unconfirmed messages go back to the store.

        Synchronous on purpose: the requeue is submitted before anything else
        can route to the name, so the store keeps the order.
        """
        if conn.released:
            return
        conn.released = True
        conn.closing = True
        conn.state = SessionState.CLOSED
        self._unwatch(conn)
        name = conn.name
        if name is None:
            return
        if self._online.get(name) is conn:
            del self._online[name]
            if not conn.replaced:
                self._note_presence(name, False)
        back = [
            QueuedMessage(name, e.sender, e.msg_id, e.server_ts, e.frame, e.created)
            for e in conn.inflight.values()
            if not e.from_store
        ]
        rids = {(e.sender, e.msg_id): e.rid for e in conn.inflight.values() if not e.from_store}
        conn.inflight.clear()
        conn.inflight_bytes = 0
        conn.pending.clear()
        if back:
            try:
                fut = self._store.requeue(back)
            except RuntimeError:  # the store is already closed: nothing more can be kept
                log.error("store closed: %d unconfirmed messages for %s not requeued", len(back), name)
                return
            fut.add_done_callback(lambda f: self._requeued(f, name, back, rids))

    def _requeued(
        self,
        fut: asyncio.Future[int],
        recipient: str,
        back: list[QueuedMessage],
        rids: dict[tuple[str, str], str | None],
    ) -> None:
        if fut.cancelled() or fut.exception() is not None:
            log.error("could not requeue %d messages for %s", len(back), recipient, exc_info=fut.exception())
            return
        # The senders learn the message is now safely queued.
        for m in back:
            sender = self._online.get(m.sender)
            if sender is not None:
                sender.write(ack_frame(m.msg_id, recipient, "queued", rids.get((m.sender, m.msg_id))))

    def _note_presence(self, name: str, online: bool) -> None:
        """Record a presence change; changes are pushed in batches.

        A change goes only to the sessions interested in that name (they looked it
        up, wrote to it or received from it) and to those that listed the
        directory: pushing every change to every connection made n logins cost
        O(n^2). A batch costs one write per interested connection however many
        people came and went meanwhile. Only the latest state of each name is pushed.
        """
        self._presence.pop(name, None)
        self._presence[name] = online
        if self._presence_timer is None and not self._closing:
            self._presence_timer = asyncio.get_running_loop().call_later(
                PRESENCE_BATCH_SECONDS, self._push_presence
            )

    def _push_presence(self) -> None:
        self._presence_timer = None
        changes, self._presence = self._presence, {}
        if not changes or not self._online:
            return
        frames = {name: encode_frame({"type": "presence", "name": name, "online": online}) for name, online in changes.items()}
        out: dict[_Connection, list[bytes]] = {}
        for conn in self._watch_all:
            out[conn] = [frame for name, frame in frames.items() if name != conn.name]  # never about oneself
        watchers = self._watchers
        for name, frame in frames.items():
            for conn in watchers.get(name, ()):
                if not conn.watch_all:
                    out.setdefault(conn, []).append(frame)
        for conn, parts in out.items():  # a write may drop a slow reader: the sets are not iterated here
            if parts and not conn.closing:
                conn.write(parts[0] if len(parts) == 1 else b"".join(parts))

    def _watch(self, conn: _Connection, name: str) -> None:
        """From now on, push ``name``'s presence changes to ``conn`` (it looked the name up, wrote to it or heard from it)."""
        if conn.watch_all or conn.closing or name == conn.name:
            return
        watching = conn.watching
        if watching is None:
            watching = conn.watching = set()
        elif name in watching:
            return
        watching.add(name)
        watchers = self._watchers.get(name)
        if watchers is None:
            watchers = self._watchers[name] = set()
        watchers.add(conn)

    def _unwatch(self, conn: _Connection) -> None:
        if conn.watch_all:
            conn.watch_all = False
            self._watch_all.discard(conn)
        watching, conn.watching = conn.watching, None
        for name in watching or ():
            watchers = self._watchers.get(name)
            if watchers is not None:
                watchers.discard(conn)
                if not watchers:
                    del self._watchers[name]

    # --- frames -------------------------------------------------------------------------

    def _dispatch(self, conn: _Connection, frame: dict[str, Any], now: float) -> Any:
        """Handle one frame; returns an awaitable when the handler needs the store, else None."""
        kind = frame["type"]
        # A `received` confirming a message this connection was handed is free: a client
        # working through a 10,000-message backlog must be able to confirm every one.
        if not (kind == "received" and self._confirms_in_flight(conn, frame)) and not conn.bucket.take(now):
            self._error(conn, "rate_limited", "too many frames; this one was dropped", request_id(frame))
            return None
        try:
            nxt = check_transition(conn.state, kind)
            if kind == "send":
                return self._on_send(conn, frame)
            if kind == "received":
                self._on_received(conn, frame)
            elif kind == "ping":
                pong: dict[str, Any] = {"type": "pong"}
                rid = request_id(frame)
                if rid is not None:
                    pong["rid"] = rid
                conn.send(pong)
            elif kind == "lookup":
                return self._guard(conn, frame, self._on_lookup(conn, frame))
            elif kind == "list":
                return self._guard(conn, frame, self._on_list(conn, frame))
            elif kind == "hello":
                self._on_hello(conn, frame)
                conn.state = nxt
            elif kind == "auth":
                return self._guard(conn, frame, self._on_auth(conn, frame))
        except ProtocolError as exc:
            self._protocol_error(conn, exc, request_id(frame))
        except BadKey as exc:
            self._fatal(conn, "bad_key", exc.detail, request_id(frame))
        except Exception:  # noqa: BLE001 - the peer gets a generic `internal`, the log the traceback
            self._internal(conn, kind, request_id(frame))
        return None

    @staticmethod
    def _confirms_in_flight(conn: _Connection, frame: dict[str, Any]) -> bool:
        sender, msg_id = frame.get("from"), frame.get("id")
        return isinstance(sender, str) and isinstance(msg_id, str) and (sender, msg_id) in conn.inflight

    async def _guard(self, conn: _Connection, frame: dict[str, Any], handler: Any) -> None:
        try:
            await handler
        except ProtocolError as exc:
            self._protocol_error(conn, exc, request_id(frame))
        except BadKey as exc:
            self._fatal(conn, "bad_key", exc.detail, request_id(frame))
        except Exception:  # noqa: BLE001 - the peer gets a generic `internal`, the log the traceback
            self._internal(conn, frame["type"], request_id(frame))

    def _protocol_error(self, conn: _Connection, exc: ProtocolError, rid: str | None) -> None:
        if exc.fatal:
            self._fatal(conn, exc.code, exc.detail, rid)
        else:
            self._error(conn, exc.code, exc.detail, rid)

    def _error(self, conn: _Connection, code: str, message: str, rid: str | None) -> None:
        if code == "rate_limited":
            if conn.rate_logged:
                conn.send(error_frame(code, message, fatal=False, rid=rid))
                return
            conn.rate_logged = True  # one log line per connection, not one per dropped frame
        log.info("error %s to %s%s: %s", code, conn.peer, f" ({conn.name})" if conn.name else "", message)
        conn.send(error_frame(code, message, fatal=False, rid=rid))

    def _internal(self, conn: _Connection, kind: str, rid: str | None) -> None:
        log.exception("internal error handling %r from %s", kind[:40], conn.peer)
        if not conn.closing:
            conn.send(error_frame("internal", "internal server error", fatal=False, rid=rid))

    # handshake

    def _on_hello(self, conn: _Connection, frame: dict[str, Any]) -> None:
        validate_client_frame(frame)
        key = load_public_key_pem(frame["pubkey"])
        conn.hello_name = frame["name"]
        conn.hello_key = key
        conn.nonce = os.urandom(AUTH_NONCE_SIZE)
        challenge: dict[str, Any] = {
            "type": "challenge",
            "server_id": self._server_id_b64,
            "nonce": b64encode(conn.nonce),
        }
        rid = request_id(frame)
        if rid is not None:
            challenge["rid"] = rid
        conn.send(challenge)

    async def _on_auth(self, conn: _Connection, frame: dict[str, Any]) -> None:
        rid = request_id(frame)
        validate_client_frame(frame)
        name, key, nonce = conn.hello_name, conn.hello_key, conn.nonce
        assert name is not None and nonce is not None
        conn.nonce = None  # one signature per challenge
        try:
            signature = b64decode(frame["signature"])
        except ValueError:
            self._fatal(conn, "auth_failed", "signature is not valid base64", rid)
            return
        if not verify_auth(key, signature, self._server_id, name, nonce):
            self._fatal(conn, "auth_failed", "signature does not verify with the presented key", rid)
            return
        fp = fingerprint(key)
        known = self._fingerprints.get(name)
        new = False
        if known is None:
            reg, new = await self._store.register(name, public_key_pem(key), fp)
            known = self._fingerprints[name] = reg.fingerprint
            if new:
                log.info("registered %s with key %s from %s", name, fp, conn.peer)
        if conn.closing:
            return
        if known != fp:
            self._fatal(conn, "name_taken", f"the name '{name}' is registered with another key", rid)
            return
        conn.last_frame = asyncio.get_running_loop().time()  # the idle clock starts at welcome
        old = self._online.get(name)
        if old is not None and old is not conn:
            old.replaced = True
            self._fatal(old, "replaced", "a new session for this name started elsewhere")
        conn.name = name
        conn.state = SessionState.OPEN
        self._online[name] = conn
        conn.flushing = True  # before anything can be routed here
        welcome: dict[str, Any] = {"type": "welcome", "name": name, "fingerprint": fp, "new": new}
        if rid is not None:
            welcome["rid"] = rid
        conn.send(welcome)
        log.debug("session %s for %s", conn.peer, name)
        self._note_presence(name, True)
        self._spawn(self._deliver_backlog(conn, name))

    async def _deliver_backlog(self, conn: _Connection, name: str) -> None:
        """Stream the stored queue oldest first, then what arrived meanwhile."""
        after = 0
        try:
            while not conn.closing:
                batch = await self._store.fetch(name, after, BACKLOG_BATCH)
                if conn.closing or not batch:
                    break
                for m in batch:
                    after = m.seq
                    key = (m.sender, m.msg_id)
                    held = conn.inflight.get(key)
                    if held is not None:  # a resend already waiting in memory: it is stored too
                        held.from_store = True
                        continue
                    conn.hand_out(key, _InFlight(m.sender, m.msg_id, m.server_ts, m.frame, m.enqueued_at, True))
                    self._watch(conn, m.sender)
                    # Wait for the reader instead of tripping the outgoing bound ourselves.
                    buffered = conn.buffered()
                    if buffered and buffered + len(m.frame) > conn.max_out:
                        conn.flush()
                        await conn.drain()
                        if conn.closing:
                            return
                    conn.write(m.frame)
                    if conn.closing:
                        return
                conn.flush()
                if conn.transport.get_write_buffer_size() > READ_CHUNK:
                    await conn.drain()
        except (ConnectionError, OSError):
            return
        except Exception:  # e.g. the store failed: the session cannot keep its order
            log.exception("backlog delivery to %s failed", name)
            conn.reason = "backlog delivery failed"
            conn.closing = True
            self._release(conn)
            conn.transport.abort()
            return
        if conn.closing:
            return
        conn.flushing = False
        for key in conn.pending:
            entry = conn.inflight.get(key)
            if entry is not None:
                conn.write(entry.frame)
        conn.pending.clear()

    # directory

    async def _registration(self, name: str) -> Registration | None:
        reg = await self._store.get_registration(name)
        if reg is not None:
            self._fingerprints[name] = reg.fingerprint
        return reg

    async def _on_lookup(self, conn: _Connection, frame: dict[str, Any]) -> None:
        rid = request_id(frame)
        if not conn.lookups.take(asyncio.get_running_loop().time()):
            self._error(conn, "rate_limited", "too many lookups", rid)
            return
        validate_client_frame(frame)
        name = frame["name"]
        reg = await self._registration(name)
        if reg is None:
            self._error(conn, "unknown_user", f"no user named '{name}'", rid)
            return
        self._watch(conn, name)
        reply: dict[str, Any] = {"type": "key", "name": name, "pubkey": reg.pubkey_pem, "fingerprint": reg.fingerprint}
        if rid is not None:
            reply["rid"] = rid
        conn.send(reply)

    async def _on_list(self, conn: _Connection, frame: dict[str, Any]) -> None:
        names = await self._store.list_names()
        if not conn.closing and not conn.watch_all:
            conn.watch_all = True
            self._watch_all.add(conn)
        online = self._online
        reply: dict[str, Any] = {"type": "users", "users": [{"name": n, "online": n in online} for n in names]}
        rid = request_id(frame)
        if rid is not None:
            reply["rid"] = rid
        conn.send(reply)

    # messages

    def _on_send(self, conn: _Connection, frame: dict[str, Any]) -> Any:
        validate_client_frame(frame)
        sender = conn.name
        assert sender is not None
        to: str = frame["to"]
        envelope = frame["envelope"]
        rid = request_id(frame)
        if envelope["from"] != sender:
            self._error(conn, "bad_request", "envelope 'from' is not your name", rid)
            return None
        if to == sender:
            self._error(conn, "bad_request", "cannot send a message to yourself", rid)
            return None
        msg_id: str = envelope["id"]
        server_ts = now_ms()
        target = self._online.get(to)
        if target is not None:
            self._forward(conn, target, sender, envelope, server_ts, rid)
            return None
        if to in self._fingerprints:
            self._watch(conn, to)
            # The common case needs no lookup: store without waiting, so the next frames of
            # this connection are read meanwhile and their enqueues share one commit.
            body = encode_frame({"type": "message", "from": sender, "server_ts": server_ts, "envelope": envelope})
            stored = self._store.enqueue(QueuedMessage(to, sender, msg_id, server_ts, body, time.time()))
            return _Deferred(self._guard(conn, frame, self._ack_queued(conn, stored, msg_id, to, rid)))
        return self._guard(conn, frame, self._send_offline(conn, sender, to, envelope, server_ts, rid))

    def _forward(
        self, conn: _Connection, target: _Connection, sender: str, envelope: dict[str, Any], server_ts: int, rid: str | None
    ) -> None:
        """Hand a message to its online recipient; held as unconfirmed until ``received``."""
        to: str = envelope["to"]
        msg_id: str = envelope["id"]
        body = encode_frame({"type": "message", "from": sender, "server_ts": server_ts, "envelope": envelope})
        # Unconfirmed messages held for one recipient obey the same caps as its stored queue.
        if len(target.inflight) >= self.config.queue_limit or target.inflight_bytes + len(body) > self.config.queue_bytes:
            self._error(conn, "queue_full", f"too many unconfirmed messages for '{to}'", rid)
            return
        key = (sender, msg_id)
        target.hand_out(key, _InFlight(sender, msg_id, server_ts, body, time.time(), False, rid))
        self._watch(conn, to)
        self._watch(target, sender)
        if target.flushing:
            target.pending.append(key)
        else:
            target.write(body)

    async def _ack_queued(
        self, conn: _Connection, stored: asyncio.Future[bool], msg_id: str, to: str, rid: str | None
    ) -> None:
        try:
            await stored
        except QueueFull as exc:
            self._error(conn, "queue_full", str(exc), rid)
            return
        conn.write(ack_frame(msg_id, to, "queued", rid))

    async def _send_offline(
        self, conn: _Connection, sender: str, to: str, envelope: dict[str, Any], server_ts: int, rid: str | None
    ) -> None:
        if await self._registration(to) is None:
            self._error(conn, "unknown_user", f"no user named '{to}'", rid)
            return
        if conn.closing:
            return
        # The recipient may have logged in while we looked it up; its backlog fetch
        # is already under way, so storing now would strand the message until its
        # next session.
        target = self._online.get(to)
        if target is not None:
            self._forward(conn, target, sender, envelope, server_ts, rid)
            return
        self._watch(conn, to)
        body = encode_frame({"type": "message", "from": sender, "server_ts": server_ts, "envelope": envelope})
        msg_id: str = envelope["id"]
        stored = self._store.enqueue(QueuedMessage(to, sender, msg_id, server_ts, body, time.time()))
        await self._ack_queued(conn, stored, msg_id, to, rid)

    def _on_received(self, conn: _Connection, frame: dict[str, Any]) -> None:
        validate_client_frame(frame)
        recipient = conn.name
        assert recipient is not None
        sender: str = frame["from"]
        msg_id: str = frame["id"]
        entry = conn.confirm((sender, msg_id))
        if entry is None or entry.from_store:
            # Confirmed from the backlog (or from an earlier session): batch the deletes.
            if not self._deletes:
                asyncio.get_running_loop().call_soon(self._flush_deletes)
            self._deletes.append((recipient, sender, msg_id))
        if entry is None:
            return
        target = self._online.get(sender)
        if target is not None:
            target.write(ack_frame(msg_id, recipient, "delivered", entry.rid))

    def _flush_deletes(self) -> None:
        if not self._deletes:
            return
        keys, self._deletes = self._deletes, []
        fut = self._store.delete(keys)
        fut.add_done_callback(self._deleted)

    @staticmethod
    def _deleted(fut: asyncio.Future[int]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.error("could not delete confirmed messages", exc_info=fut.exception())
