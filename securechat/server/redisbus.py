"""RedisBus: the node's one subscriber connection to Redis, which keeps itself up.

After any break (Redis restarted, the connection killed, a heartbeat not
answered) it reconnects with backoff, subscribes to every channel again in one
command and calls ``on_resync`` once that took effect, so its owner can catch
up on whatever the gap swallowed: pub/sub is only a poke, never the record.

A connection counts as back only once Redis accepted its set-up (``AUTH``,
``SELECT``, ``CLIENT SETNAME``, and a ``PING``, which a Redis still loading its
data after a restart answers ``LOADING``: subscribing then would catch up on a
store that answers nothing yet): a refusal (a password changed under the node,
an ACL that no longer lets it in) or any error reply later on drops the
connection and is retried with the same backoff, so the bus resubscribes by
itself once Redis takes it again. Each change of state is one log line: cut,
refused (once per distinct refusal), back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

import hiredis

from .backoff import Backoff
from .rediscommands import pack
from .rediswire import Wire, open_wire
from .resp import COMMAND_TIMEOUT, RedisAddress, RedisUnavailable, not_serving

log = logging.getLogger("securechat.server.redis")

PING_INTERVAL: Final = 2.0  # the heartbeat; no answer for COMMAND_TIMEOUT means a new connection


class RedisRefused(RedisUnavailable):
    """Redis answered the subscriber's set-up or a command with an error (a wrong password, an ACL)."""


class RedisBus:
    """One subscriber connection that keeps itself up and says when it had to catch up.

    ``on_message(channel, data)`` gets every published message; ``on_resync()``
    is called after a reconnect, once the subscriptions are in place again.
    """

    def __init__(
        self,
        address: RedisAddress,
        on_message: Callable[[bytes, bytes], None],
        on_resync: Callable[[], None],
        *,
        client_name: str = "securechat-bus",
        timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        self.address = address
        self._on_message = on_message
        self._on_resync = on_resync
        self._client_name = client_name
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._counts: dict[bytes, int] = {}  # channel -> local subscribers
        self._confirming: dict[bytes, asyncio.Future[None]] = {}
        self._wire: Wire | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._last_heard = 0.0
        self._resync_due = False
        self._setup: asyncio.Future[None] | None = None  # Redis's answer to a step of a new connection's set-up
        self._hello_left = 0
        self._accepted = False  # the current connection's AUTH, SELECT and SETNAME were answered OK
        self._closed = False
        self.connected = asyncio.Event()

    async def start(self) -> None:
        """Connect once (raising :class:`RedisUnavailable`), then keep the connection up."""
        await self._open()
        self._task = self._loop.create_task(self._keep_up())

    def subscribe(self, channel: bytes) -> asyncio.Future[None]:
        """Count one more local subscriber of ``channel``; the future is done once Redis confirmed it."""
        count = self._counts.get(channel, 0)
        self._counts[channel] = count + 1
        waiting = self._confirming.get(channel)
        if waiting is not None:
            return waiting
        fut: asyncio.Future[None] = self._loop.create_future()
        if count:
            fut.set_result(None)
            return fut
        self._confirming[channel] = fut
        if self._wire is not None and self._accepted:  # else _open subscribes to it with the others
            self._wire.write(pack(("SUBSCRIBE", channel)))
        return fut

    def unsubscribe(self, channel: bytes) -> None:
        """One local subscriber fewer; the last one unsubscribes."""
        count = self._counts.get(channel, 0) - 1
        if count > 0:
            self._counts[channel] = count
            return
        self._counts.pop(channel, None)
        waiting = self._confirming.pop(channel, None)
        if waiting is not None and not waiting.done():
            waiting.set_exception(RedisUnavailable("unsubscribed before Redis confirmed the subscription"))
            waiting.exception()  # retrieved: its waiter may be gone
        if self._wire is not None and self._accepted:
            self._wire.write(pack(("UNSUBSCRIBE", channel)))

    def is_subscribed(self, channel: bytes) -> bool:
        return channel in self._counts

    # --- the connection -------------------------------------------------------------

    async def _open(self) -> None:
        """Connect, have the set-up accepted, then the subscriptions; :class:`RedisUnavailable` if not."""
        wire = Wire(self._on_reply, self._on_wire_lost)
        try:
            await open_wire(self.address, wire)
        except (OSError, TimeoutError) as exc:
            raise RedisUnavailable(f"cannot reach Redis at {self.address}: {exc or type(exc).__name__}") from None
        self._lost.clear()
        self._wire = wire
        self._last_heard = self._loop.time()
        hello = [*self.address.hello_commands(self._client_name), ("PING",)]  # PING: Redis serves (not LOADING)
        self._accepted, self._hello_left, self._resync_due = False, len(hello), False
        await self._step(wire, b"".join(pack(c) for c in hello))
        channels = list(self._counts)
        if not channels:
            self._on_resync()  # nothing to wait for
        else:
            self._resync_due = True
            await self._step(wire, pack(("SUBSCRIBE", *channels)))  # one command: all in place at its first answer
        self.connected.set()

    async def _step(self, wire: Wire, data: bytes) -> None:
        """Write ``data`` and wait until Redis took it; else drop the connection and raise."""
        self._setup = setup = self._loop.create_future()
        wire.write(data)
        try:
            await asyncio.wait_for(setup, self._timeout)
        except (RedisUnavailable, TimeoutError) as exc:
            self._wire = None
            wire.abort()
            if isinstance(exc, RedisUnavailable):
                raise
            raise RedisUnavailable(f"Redis at {self.address} did not answer the subscriber's set-up") from None

    async def _keep_up(self) -> None:
        backoff = Backoff()
        while not self._closed:
            try:
                await asyncio.wait_for(self._lost.wait(), PING_INTERVAL)
            except TimeoutError:
                self._heartbeat()
                continue
            self.connected.clear()
            down = self._loop.time()
            refused = ""
            while not self._closed:
                await asyncio.sleep(backoff.next())
                try:
                    await self._open()
                except RedisRefused as exc:
                    if str(exc) != refused:  # one line per refusal, not one per attempt
                        refused = str(exc)
                        log.error("subscriber: %s: retrying until Redis takes it", exc)
                    continue
                except RedisUnavailable as exc:
                    log.debug("subscriber: %s", exc)  # the loss was logged; so is the return
                    continue
                log.warning("subscriber reconnected to Redis at %s after %.1f s", self.address, self._loop.time() - down)
                backoff.reset()
                break

    def _heartbeat(self) -> None:
        wire = self._wire
        if wire is None:
            return
        if self._loop.time() - self._last_heard > self._timeout:
            wire.abort()
            self._on_wire_lost(wire, f"heard nothing for {self._timeout:.1f} s")
            return
        wire.write(pack(("PING",)))

    def _on_wire_lost(self, wire: Wire, why: str = "lost the connection") -> None:
        if wire is not self._wire:
            return
        self._wire = None
        self._lost.set()
        if self._setup is not None and not self._setup.done():  # during the set-up: _open says so
            self._setup.set_exception(RedisUnavailable(f"lost the connection to Redis at {self.address} ({why})"))
        elif not self._closed:
            log.error("the subscriber is cut from Redis at %s (%s): reconnecting", self.address, why)

    def _on_reply(self, reply: Any) -> None:
        self._last_heard = self._loop.time()
        if isinstance(reply, list) and len(reply) >= 3:
            kind = reply[0]
            if kind == b"message":
                self._on_message(reply[1], reply[2])
            elif kind == b"subscribe":
                self._confirmed(reply[1])
        elif isinstance(reply, hiredis.ReplyError):
            self._refused(reply)
        elif not self._accepted and self._setup is not None and not self._setup.done():
            self._hello_left -= 1  # one more of AUTH, SELECT, SETNAME answered OK
            if self._hello_left <= 0:
                self._accepted = True
                self._setup.set_result(None)

    def _refused(self, reply: hiredis.ReplyError) -> None:
        """An error reply: during the set-up it fails it (``_open`` says so); later the connection starts again."""
        setup = self._setup
        if setup is not None and not setup.done():
            if not_serving(str(reply)):  # loading its data: back later, no refusal to report
                setup.set_exception(RedisUnavailable(f"Redis at {self.address} cannot serve yet ({reply})"))
            else:
                setup.set_exception(RedisRefused(f"Redis at {self.address} refused the subscriber ({reply})"))
        elif self._accepted and (wire := self._wire) is not None:
            # A SUBSCRIBE an ACL forbids, say: start again (with backoff) rather than sit unsubscribed.
            wire.abort()
            self._on_wire_lost(wire, f"it refused a subscriber command: {reply}")

    def _confirmed(self, channel: bytes) -> None:
        if self._resync_due:
            # The first confirmation of a resubscription: one SUBSCRIBE for all, so all are in place.
            self._resync_due = False
            self._on_resync()
            if self._setup is not None and not self._setup.done():
                self._setup.set_result(None)
        waiting = self._confirming.pop(channel, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    async def close(self) -> None:
        self._closed = True
        self._lost.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        wire, self._wire = self._wire, None
        if wire is not None and wire.transport is not None:
            wire.transport.close()
        for fut in self._confirming.values():
            if not fut.done():
                fut.set_exception(RedisUnavailable("the subscriber is closed"))
                fut.exception()
