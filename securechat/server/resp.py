"""The server's Redis client: RESP over asyncio, parsed by hiredis, commands pipelined in call order.

:class:`RedisLink` carries commands. :meth:`RedisLink.call` submits a
  command at once and returns a future; commands are written in call order on
  one connection, the ones of a loop iteration in one write, and replies are
  matched first in, first out. So the store's guarantee (work is applied in
  call order, docs/architecture.md) holds across the network, and group
  commit comes free. A lost connection fails every command not yet answered
  with :class:`RedisUnavailable` (the caller answers ``internal``; nothing is
  retried here, so nothing is applied twice without the caller knowing); the
  next call reconnects, at most once per backoff step. A reply that does not
  come within ``timeout`` seconds drops the connection the same way, so a
  partition turns into errors, not a hang.

The subscriber connection is :class:`~securechat.server.redisbus.RedisBus`;
both stand on :class:`~securechat.server.rediswire.Wire` (bytes in, hiredis replies out).

Why not redis-py's client for this: on this machine its pipeline costs about
23 µs of CPU per command against 5 µs here (docs/performance.md), and the
relay sends two commands per message. redis-py still parses the URL.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import urllib.parse
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

try:
    import hiredis
    from redis.connection import parse_url
except ImportError as exc:  # pragma: no cover - the message is what the CLI prints
    raise ImportError("Redis support needs the redis extra: pip install 'securechat[redis]'") from exc

from .backoff import Backoff
from .rediscommands import Batch, PublishBatch, Script, pack, unanswered
from .rediswire import Wire, open_wire

log = logging.getLogger("securechat.server.redis")

COMMAND_TIMEOUT: Final = 5.0  # a reply later than this drops the connection


class RedisUnavailable(ConnectionError):
    """Redis could not be reached, or the connection broke before the reply came."""


class RedisReplyError(Exception):
    """Redis answered a command with an error."""


# Replies that say Redis cannot serve yet, not that the command is wrong: it is loading its data after a
# restart, or (a replica) its primary is away. The command fails as if Redis were out of reach.
NOT_SERVING: Final = ("LOADING", "MASTERDOWN")


def not_serving(text: str) -> bool:
    """True if an error reply's ``text`` says Redis cannot serve for now (:data:`NOT_SERVING`)."""
    return text.startswith(NOT_SERVING)


@dataclass(frozen=True)
class RedisAddress:
    """Where Redis is, from a ``redis://``, ``rediss://`` or ``unix://`` URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    sentinels: tuple[tuple[str, int], ...] = ()  # redis+sentinel://: ask these where the primary is
    master: str = ""

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        """Parse ``url``; raises ``ValueError`` saying what is wrong with it."""
        if url.startswith("redis+sentinel://"):
            from .sentinel import sentinel_address

            return sentinel_address(url)
        try:
            parts = parse_url(url)  # type: ignore[no-untyped-call]
        except (ValueError, TypeError) as exc:
            raise ValueError(f"bad Redis URL {url!r}: {exc}") from None
        path = urllib.parse.urlsplit(url).path.strip("/")
        if url.startswith(("redis://", "rediss://")) and path and not path.isdigit():
            # redis-py would quietly use database 0.
            raise ValueError(f"bad Redis URL {url!r}: the database after the host must be a number, got {path!r}")
        kind = getattr(parts.get("connection_class"), "__name__", "")
        return cls(
            host=str(parts.get("host") or "127.0.0.1"),
            port=int(parts.get("port") or 6379),
            path=parts.get("path"),
            db=int(parts.get("db") or 0),
            username=parts.get("username"),
            password=parts.get("password"),
            tls=kind == "SSLConnection",
        )

    def __str__(self) -> str:
        """For logs and errors: never the password."""
        if self.sentinels:
            return f"redis+sentinel://{','.join(f'{h}:{p}' for h, p in self.sentinels)}/{self.master}/{self.db}"
        where = f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"
        return f"{'rediss' if self.tls else 'redis'}://{where}/{self.db}"

    def hello_commands(self, client_name: str) -> list[tuple[Any, ...]]:
        """What a new connection sends first: AUTH, SELECT, CLIENT SETNAME."""
        commands: list[tuple[Any, ...]] = []
        if self.password is not None:
            auth = ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
            commands.append(auth)
        if self.db:
            commands.append(("SELECT", self.db))
        commands.append(("CLIENT", "SETNAME", client_name))
        return commands


class RedisLink:
    """Commands to one Redis, pipelined on one connection and applied in call order."""

    def __init__(
        self,
        address: RedisAddress,
        *,
        scripts: Iterable[Script] = (),
        client_name: str = "securechat",
        timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        self.address = address
        self._scripts = list(scripts)
        self._client_name = client_name
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._wire: Wire | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._unsent: list[bytes | Batch] = []  # a Batch stays open to later calls until it is written
        self._unsent_futures: list[asyncio.Future[Any] | Batch] = []
        self._pending: collections.deque[asyncio.Future[Any] | Batch] = collections.deque()
        self._flush_handle: asyncio.Handle | None = None
        self._waiting_since: float | None = None  # oldest unanswered write, for the timeout
        self._watchdog: asyncio.TimerHandle | None = None
        self._backoff = Backoff()
        self._retry_at = 0.0
        self._last_error = ""
        self._down_since: float | None = None  # when Redis went out of reach, while it is
        self._failed_while_down = 0
        self._closed = False

    # --- submitting -------------------------------------------------------------------

    def call(self, *args: Any) -> asyncio.Future[Any]:
        """Submit one command now; the future gets its reply (bytes, int, list, None)."""
        if self._closed:
            raise RuntimeError("the Redis link is closed")
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._unsent.append(pack(args))
        self._unsent_futures.append(fut)
        self._submitted()
        return fut

    def _submitted(self) -> None:
        if self._wire is not None:
            if self._flush_handle is None:
                self._flush_handle = self._loop.call_soon(self._flush)
        elif self._connecting is None:
            self._start_connecting()

    def script(self, script: Script, keys: Iterable[Any], args: Iterable[Any]) -> asyncio.Future[Any]:
        """``EVALSHA`` of a script this link loads on connecting."""
        keys = list(keys)
        return self.call("EVALSHA", script.sha, len(keys), *keys, *args)

    def script_batched(
        self, script: Script, keys: Sequence[Any], head: Callable[[], Sequence[Any]], item: Sequence[Any], *,
        join: Hashable, width: int,
    ) -> asyncio.Future[Any]:  # fmt: skip
        """Like :meth:`script` with ``ARGV`` = ``head()`` + ``item``, joined to the call just before if that was
        one of the same script and ``join`` and is not written yet (:mod:`securechat.server.rediscommands`); the
        future gets this call's ``width`` values of the reply. ``head`` is called only for a call that starts
        a batch: the calls that join it take the first one's."""
        if self._closed:
            raise RuntimeError("the Redis link is closed")
        fut: asyncio.Future[Any] = self._loop.create_future()
        last = self._unsent[-1] if self._unsent else None
        if not isinstance(last, Batch) or last.sha != script.sha or last.join != join or last.full:
            last = Batch(script.sha, keys, head(), join, width)
            self._unsent.append(last)
            self._unsent_futures.append(last)
        last.add(item, fut)
        self._submitted()
        return fut

    def publish_batched(
        self, channel: bytes, item: Any, *, join: Hashable, then: Hashable, compose: Callable[[Any, list[Any]], bytes],
        size: int = 0,
    ) -> asyncio.Future[int]:  # fmt: skip
        """``PUBLISH`` of ``compose(join, [item])`` on ``channel``, joined to the call just before if that was a
        publish on ``channel`` whose ``then`` was this call's ``join`` and is not written yet: its message is
        then ``compose`` of the first call's ``join`` and every joined item, in call order, and the calls share
        one future, the reply's (the same object: a caller may tell a call that joined from one that began)."""
        if self._closed:
            raise RuntimeError("the Redis link is closed")
        last = self._unsent[-1] if self._unsent else None
        if not isinstance(last, PublishBatch) or last.channel != channel or last.join != join or last.full:
            last = PublishBatch(channel, join, compose, self._loop.create_future())
            self._unsent.append(last)
            self._unsent_futures.append(last)
        last.join_item(item, size)
        last.join = then
        self._submitted()
        return last.future

    def _flush(self) -> None:
        self._flush_handle = None
        wire = self._wire
        if wire is None or not self._unsent:
            return
        data = b"".join(c if isinstance(c, bytes) else pack(c.command()) for c in self._unsent)
        if not self._pending:
            self._waiting_since = self._loop.time()
        self._pending.extend(self._unsent_futures)
        self._unsent, self._unsent_futures = [], []
        wire.write(data)

    # --- replies ----------------------------------------------------------------------

    def _on_reply(self, reply: Any) -> None:
        if not self._pending:
            log.error("an unexpected reply from Redis: closing the connection")
            if self._wire is not None:
                self._wire.abort()
            return
        fut = self._pending.popleft()
        self._waiting_since = self._loop.time() if self._pending else None
        if isinstance(reply, hiredis.ReplyError):
            text = str(reply)
            if text.startswith(("NOSCRIPT", "READONLY")) and self._wire is not None and not self._wire.closing:
                # The script cache was flushed, or the primary became a replica under us (a failover the
                # node learnt of late): a new connection loads the scripts, or asks the sentinels again.
                log.error("Redis at %s answered %s: reconnecting", self.address, text.split(" ", 1)[0])
                self._wire.abort()
            if not fut.done():  # a write to a replica failed for want of the primary, like a lost connection
                unavailable = text.startswith(("READONLY", "NOAUTH")) or not_serving(text)
                fut.set_exception(RedisUnavailable(text) if unavailable else RedisReplyError(text))
        elif not fut.done():
            fut.set_result(reply)

    def _on_lost(self, wire: Wire) -> None:
        if wire is not self._wire:
            return
        self._wire = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if not self._closed:
            self._went_down("lost the connection")
        self._fail_all(RedisUnavailable(f"lost the connection to Redis at {self.address}"))

    def _went_down(self, why: str) -> None:
        """One line when Redis goes out of reach, one when it is back (not one per failed command)."""
        if self._down_since is None:
            self._down_since = self._loop.time()
            self._failed_while_down = 0
            log.error("Redis at %s is out of reach (%s): answering errors until it is back", self.address, why)

    def _fail_all(self, exc: Exception) -> None:
        futures = [*self._pending, *self._unsent_futures]
        self._pending.clear()
        self._unsent, self._unsent_futures = [], []
        self._waiting_since = None
        if self._down_since is not None:
            self._failed_while_down += len(futures)
        for fut in futures:  # a Batch fails each of its calls
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: a caller that stopped caring must not log it

    # --- connecting -------------------------------------------------------------------

    def _start_connecting(self) -> None:
        if self._loop.time() < self._retry_at:
            # Redis failed us a moment ago: answer at once instead of hammering it.
            self._fail_all(RedisUnavailable(self._last_error))
            return
        self._connecting = self._loop.create_task(self._connect())

    async def _connect(self) -> None:
        wire = Wire(self._on_reply, self._on_lost)
        try:
            await open_wire(self.address, wire)
        except (OSError, TimeoutError) as exc:
            self._could_not_connect(f"cannot reach Redis at {self.address}: {exc or type(exc).__name__}",
                                    f"{exc or type(exc).__name__}")  # fmt: skip
            self._fail_all(RedisUnavailable(self._last_error))
            return
        finally:
            self._connecting = None
        if self._closed:
            wire.abort()
            return
        self._wire = wire
        # The handshake goes first; the commands queued meanwhile follow in the same write.
        first = [*self.address.hello_commands(self._client_name), *(("SCRIPT", "LOAD", s.source) for s in self._scripts)]
        futures = [self._loop.create_future() for _ in first]
        self._unsent[:0] = [pack(c) for c in first]
        self._unsent_futures[:0] = futures
        self._flush()
        self._watchdog = self._loop.call_later(self._timeout / 4, self._check)
        for fut in futures:
            fut.add_done_callback(self._hello_done)
        futures[-1].add_done_callback(self._set_up)

    def _hello_done(self, fut: asyncio.Future[Any]) -> None:
        """A refused set-up (a wrong password, say, or a Redis still loading its data) is a failure to connect:
        backoff, one line per outage."""
        if fut.cancelled() or (exc := fut.exception()) is None:
            return
        if not isinstance(exc, RedisReplyError) and not not_serving(str(exc)):
            return
        if self._wire is not None and not self._wire.closing:
            self._could_not_connect(f"Redis at {self.address} refused the connection setup: {exc}",
                                    f"it refused the connection setup: {exc}")  # fmt: skip
            self._wire.abort()

    def _could_not_connect(self, error: str, why: str) -> None:
        """A connection that failed or was refused: commands fail with ``error`` until the next backoff step."""
        self._last_error = error
        self._retry_at = self._loop.time() + self._backoff.next()
        self._went_down(why)

    def _set_up(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        self._backoff.reset()
        if self._down_since is None:
            log.info("connected to Redis at %s", self._where())
        else:
            down, self._down_since = self._loop.time() - self._down_since, None
            log.warning("Redis at %s is back after %.1f s; %d commands failed meanwhile", self._where(), down, self._failed_while_down)

    def _where(self) -> str:
        """The address for the log; under Sentinel with the primary it found (an operator's first question)."""
        transport = self._wire.transport if self._wire is not None else None
        peer = transport.get_extra_info("peername") if transport is not None else None
        if not self.address.sentinels or not isinstance(peer, tuple):
            return str(self.address)
        return f"{self.address} (primary {peer[0]}:{peer[1]})"

    def _check(self) -> None:
        self._watchdog = None
        wire = self._wire
        if wire is None:
            return
        since = self._waiting_since
        if since is not None and self._loop.time() - since > self._timeout:
            self._went_down(f"no answer for {self._timeout:.1f} s")
            wire.abort()
            self._on_lost(wire)  # at once: the abort reports only on the next loop turn
            return
        self._watchdog = self._loop.call_later(self._timeout / 4, self._check)

    async def close(self) -> None:
        """Wait (bounded) for the answers to what was submitted, then close. Idempotent."""
        if self._closed:
            return
        self._flush()
        waiting: list[Any] = [f for c in (*self._pending, *self._unsent_futures) for f in unanswered(c)]
        if self._connecting is not None:
            waiting.append(self._connecting)
        self._closed = True
        if waiting:
            await asyncio.wait(waiting, timeout=self._timeout)
        if self._watchdog is not None:
            self._watchdog.cancel()
        wire, self._wire = self._wire, None
        self._fail_all(RedisUnavailable("the Redis link is closed"))
        if wire is not None and wire.transport is not None:
            wire.transport.close()
