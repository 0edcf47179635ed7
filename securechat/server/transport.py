"""The asyncio shell of one client connection: it moves bytes and decides nothing.

:class:`Peer` is the :class:`asyncio.Protocol` of one socket. It feeds what it
reads to its :class:`~securechat.server.connection.ServerConnection`, hands the
events that come out to the server (a :class:`Handler`) and writes what the
connection and the server queue for the peer.

Events are handled straight from ``data_received``. Only an event whose handler has to wait (the store)
starts a task, which then also takes, in order, the reads that arrive meanwhile (reading pauses past
``READ_CHUNK`` of them). Answers go out in request order, except that a ``send`` refused at once may
overtake the ``queued`` acks of earlier sends still being stored (docs/protocol.md, "Server behaviour
details"). Frames written in one loop iteration leave in one transport write; a peer that lets more than
``max_outgoing_buffer`` bytes pile up is dropped. After a fatal error the shell
half-closes and discards input for at most ``LINGER_SECONDS``, so the peer reads
the error instead of a reset. An idle session holds no task, no timer and no
stream objects: this object and its connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from .connection import ServerConnection
from .events import HANDLED, NEED_DATA, Deferred, Event, Handled
from .phases import Phase

if TYPE_CHECKING:
    from .mailbox import Mailbox

log = logging.getLogger("securechat.server")

READ_CHUNK: Final = 64 * 1024
# After a fatal error the server stops writing (FIN) and discards input for at
# most this long, so the peer reads the error frame instead of a TCP reset.
LINGER_SECONDS: Final = 2.0
# Frames written in one loop iteration go out in one transport write, up to this many bytes.
COALESCE_LIMIT: Final = 64 * 1024


class Handler(Protocol):
    """What a :class:`Peer` needs from the server."""

    def connected(self, peer: Peer) -> None:
        """A socket was accepted: admit it, or :meth:`Peer.refuse` it."""

    @property
    def handlers(self) -> Mapping[type[Event], Callable[[Peer, Any], Handled]]:
        """What acts on each type of event of a peer's connection."""

    def release(self, peer: Peer) -> None:
        """The connection ended: stop routing to it (idempotent)."""

    def gone(self, peer: Peer) -> None:
        """The socket is closed: the last bookkeeping."""

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep ``task`` (a peer's pipeline) until it ends; shutdown waits for it."""


async def _settle(deferred: list[Awaitable[None]]) -> None:
    """Await ``deferred`` in order and empty it."""
    while deferred:
        await deferred.pop(0)


class Peer(asyncio.Protocol):
    """One client socket and its :class:`ServerConnection`; touched only on the event loop."""

    __slots__ = (
        "conn", "drain_waiter", "eof", "flush_handle", "handler", "inbox", "inbox_bytes", "ip", "linger", "loop",
        "mailbox", "max_out", "paused", "task", "transport", "write_paused",
    )

    def __init__(self, handler: Handler, conn: ServerConnection, max_out: int) -> None:
        self.handler = handler
        self.conn = conn
        self.max_out = max_out
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.ip = "?"
        self.mailbox: Mailbox | None = None  # routing's state for this session while it is routed to
        self.task: asyncio.Task[None] | None = None  # handling events that had to wait
        self.inbox: list[bytes] | None = None  # reads that arrived while the task was busy
        self.inbox_bytes = 0
        self.paused = False  # reading paused while the inbox is full
        self.eof = False  # EOF arrived while the task was busy
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.flush_handle: asyncio.Handle | None = None
        self.linger: asyncio.TimerHandle | None = None

    @property
    def name(self) -> str | None:
        """The session's name once logged in."""
        return self.conn.name

    @property
    def closing(self) -> bool:
        """The connection ended (failed, refused or closed): route nothing more to it."""
        return self.conn.ended

    def set_mailbox(self, box: Mailbox | None) -> None:
        """Routing starts (or stops) routing to this session through ``box``."""
        self.mailbox = box
        # What was handed to this session and not confirmed: `received` for it is free.
        self.conn.handed = box.inflight if box is not None else frozenset()

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport, source: tuple[str, int] | None = None) -> None:
        """``source``: the client's address from a balancer's PROXY header (server/proxypeer.py), else the socket's."""
        self.transport = transport  # type: ignore[assignment]
        peername = source or transport.get_extra_info("peername")
        self.ip = str(peername[0]) if peername else "?"
        self.conn.peer = f"{self.ip}:{peername[1]}" if peername else "?"
        self.handler.connected(self)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn.ended:  # after a fatal error (or a refusal) input is discarded until EOF
            return
        if self.task is not None:  # earlier events are still being handled: keep the order
            if self.inbox is None:
                self.inbox = []
            self.inbox.append(data)
            self.inbox_bytes += len(data)
            if self.inbox_bytes >= READ_CHUNK and not self.paused:
                self.paused = True
                self.transport.pause_reading()
            return
        try:
            conn.receive_data(data)
            self._run()
        except Exception:  # noqa: BLE001 - logged with its traceback, the connection closed
            self._broken()

    def eof_received(self) -> bool:
        """Answer what was asked, then close (the transport stays open meanwhile)."""
        if self.conn.phase is Phase.REFUSED:
            self._end_refusal()
        elif self.task is not None:
            self.eof = True  # the task closes when it is done
        else:
            self._finish()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_linger()
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("connection lost"))
        conn = self.conn
        conn.close(None if conn.ended else "connection lost")
        self.handler.gone(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- events ---------------------------------------------------------------------------

    def _run(self) -> None:
        """Handle every event the connection has now; an event that must wait hands the rest to a task."""
        conn = self.conn
        while (event := conn.next_event()) is not NEED_DATA:
            if event is not HANDLED:
                pending = self._handle(event)
                if pending is not None:
                    self.task = task = self.loop.create_task(self._consume(event, pending))
                    self.handler.track(task)
                    break
            if conn.bytes_to_send >= COALESCE_LIMIT:
                self.flush()
        self._after_step()

    def _handle(self, event: Event) -> Handled:
        try:
            return self.handler.handlers[type(event)](self, event)
        except Exception as exc:  # noqa: BLE001 - the peer gets its error code or `internal`, the log the traceback
            self.conn.report(exc, event.kind, event.rid)
            return None

    async def _guard(self, event: Event, awaitable: Awaitable[None]) -> None:
        try:
            await awaitable
        except Exception as exc:  # noqa: BLE001 - as in _handle
            self.conn.report(exc, event.kind, event.rid)
        finally:
            self._after_step()

    async def _consume(self, event: Event, pending: Handled) -> None:
        """Go on from ``event``, whose handler returned ``pending``; then the reads that came meanwhile."""
        conn = self.conn
        try:
            while True:
                await self._pipeline(event, pending)
                if conn.ended or not self.inbox:
                    break
                data = self.inbox.pop(0)
                self.inbox_bytes -= len(data)
                conn.receive_data(data)
                pending = None
        except (ConnectionError, OSError):
            self.end(None if conn.ended else "connection lost")
        except Exception:  # noqa: BLE001 - logged with its traceback, the connection closed
            self._broken()
        finally:
            self.task = None
            self.inbox = None
            self.inbox_bytes = 0
            if self.paused:
                self.paused = False
                if not self.transport.is_closing():
                    self.transport.resume_reading()
            if self.eof:
                self._finish()

    async def _pipeline(self, event: Event, pending: Handled) -> None:
        """Handle events in request order; offline sends being stored let later sends through."""
        conn = self.conn
        deferred: list[Awaitable[None]] = []  # offline sends being stored, in order
        try:
            while True:
                if isinstance(pending, Deferred):
                    deferred.append(self._guard(event, pending.awaitable))
                elif pending is not None:
                    await _settle(deferred)
                    await self._guard(event, pending)
                if conn.ended:
                    break
                # Answers go out in request order, except that a `send` refused at once
                # may overtake the acks of earlier sends still being stored.
                if deferred and conn.next_kind() not in (None, "send"):
                    await _settle(deferred)
                pending = None
                result = conn.next_event()
                if result is NEED_DATA:
                    break
                if result is not HANDLED:
                    event = result
                    pending = self._handle(event)
                self._after_step()
        finally:
            self._after_step()  # a fatal error stops routing to this peer before the acks are awaited
            await _settle(deferred)
            self._after_step()

    # --- writing --------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue encoded frames for the end of this loop iteration (one syscall for many frames)."""
        self.conn.send_data(data)
        if self.flush_handle is None or self.conn.bytes_to_send >= COALESCE_LIMIT:
            self._schedule()

    def accept_login(self, new: bool) -> None:
        """The login is good: ``welcome`` goes out before anything routed to the session."""
        self.conn.accept_login(new)
        self._after_step()

    def answer(self, frame: dict[str, Any], rid: str | None) -> None:
        """Answer a request of this peer."""
        self.conn.answer(frame, rid)
        self._after_step()

    def error(self, code: str, message: str, rid: str | None) -> None:
        """A non-fatal error for a request of this peer."""
        self.conn.error(code, message, rid)
        self._after_step()

    def report(self, exc: Exception, kind: str, rid: str | None) -> None:
        """``exc`` ended the handling of this peer's ``kind`` request, rid ``rid``, late: answered as at once."""
        self.conn.report(exc, kind, rid)
        self._after_step()

    def flush(self) -> None:
        """Hand queued bytes to the transport; a peer that lets them pile up past the bound is dropped."""
        self.flush_handle = None
        data = self.conn.data_to_send()
        transport = self.transport
        if not data or transport.is_closing():
            return
        transport.write(self._wire(data))
        if transport.get_write_buffer_size() > self.max_out:
            log.info("dropping %s%s: outgoing buffer above %d bytes", self.conn.peer, self._who(), self.max_out)
            self.end("outgoing buffer over the limit", abort=True)

    def buffered(self) -> int:
        """Bytes written to this connection and not yet sent."""
        return self.transport.get_write_buffer_size() + self.conn.bytes_to_send

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

    def _schedule(self) -> None:
        """Flush at the end of this loop iteration, or now if enough is queued."""
        queued = self.conn.bytes_to_send
        if queued >= COALESCE_LIMIT:
            self.flush()
        elif queued and self.flush_handle is None:
            self.flush_handle = self.loop.call_soon(self.flush)

    def _after_step(self) -> None:
        """Act on what the connection did: linger after a fatal error, else schedule what it queued."""
        if self.conn.phase is Phase.FAILED and self.linger is None:
            self._linger()
        else:
            self._schedule()

    # --- ending ---------------------------------------------------------------------------

    def fail(self, code: str, message: str, rid: str | None = None) -> None:
        """Send a fatal error, stop routing to the connection and close it after a short linger."""
        self.conn.fail(code, message, rid)
        self._after_step()

    def _linger(self) -> None:
        self.flush()  # the error frame
        self.handler.release(self)
        self._half_close()
        self.linger = self.loop.call_later(LINGER_SECONDS, self.transport.abort)

    def _half_close(self) -> None:
        """Stop writing (FIN) and keep reading, so the peer reads what was written."""
        transport = self.transport
        if not transport.is_closing() and transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:
                transport.abort()

    def _wire(self, data: bytes) -> bytes:
        """The bytes on the socket for ``data`` (frames); a TLS peer encrypts them."""
        return data

    def end(self, reason: str | None, *, abort: bool = False) -> None:
        """Close now, without an error frame; ``reason`` (if any) is what the log will say."""
        self.conn.close(reason)
        self.handler.release(self)
        if abort:
            self.transport.abort()
        else:
            self.transport.close()

    def _finish(self) -> None:
        """The peer is done: write every answer, stop routing to it and close."""
        self._cancel_linger()
        self.flush()
        self.end(None)

    def _broken(self) -> None:
        log.exception("unexpected failure on connection %s", self.conn.peer)
        self.end("internal error")

    def refuse(self, linger: bool) -> None:
        """Answer ``server_busy`` before reading anything, then close; lingering first unless ``linger`` is False."""
        self.conn.refuse()
        transport = self.transport
        transport.write(self._wire(self.conn.data_to_send()))
        if not linger:  # a flood: no courtesy linger (nor, over TLS, a handshake)
            transport.close()
            return
        self._half_close()
        if not transport.is_closing():
            self.linger = self.loop.call_later(LINGER_SECONDS, self._end_refusal)

    def _end_refusal(self) -> None:
        self._cancel_linger()
        transport = self.transport
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    def _cancel_linger(self) -> None:
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None

    def _who(self) -> str:
        return f" ({self.conn.name})" if self.conn.name else ""

