"""RedisBus: the node's one subscriber connection to Redis, which keeps itself up.

After any break (Redis restarted, the connection killed, a heartbeat not
answered) it reconnects with backoff, subscribes to every channel again in one
command and calls ``on_resync`` once that took effect, so its owner can catch
up on whatever the gap swallowed: pub/sub is only a poke, never the record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

import hiredis

from .resp import COMMAND_TIMEOUT, Backoff, RedisAddress, RedisUnavailable, Wire, open_wire, pack

log = logging.getLogger("securechat.server.redis")

PING_INTERVAL: Final = 2.0  # the heartbeat; no answer for COMMAND_TIMEOUT means a new connection


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
        if self._wire is not None:
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
        if self._wire is not None:
            self._wire.write(pack(("UNSUBSCRIBE", channel)))

    def is_subscribed(self, channel: bytes) -> bool:
        return channel in self._counts

    # --- the connection -------------------------------------------------------------

    async def _open(self) -> None:
        wire = Wire(self._on_reply, self._on_wire_lost)
        try:
            await open_wire(self.address, wire)
        except (OSError, TimeoutError) as exc:
            raise RedisUnavailable(f"cannot reach Redis at {self.address}: {exc or type(exc).__name__}") from None
        self._lost.clear()
        self._wire = wire
        self._last_heard = self._loop.time()
        hello = b"".join(pack(c) for c in self.address.hello_commands(self._client_name))
        channels = list(self._counts)
        self._resync_due = bool(channels)
        if not channels:
            self._on_resync()  # nothing to wait for
        wire.write(hello + (pack(("SUBSCRIBE", *channels)) if channels else b""))
        self.connected.set()

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
            while not self._closed:
                await asyncio.sleep(backoff.next())
                try:
                    await self._open()
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
        if not self._closed:
            log.error("the subscriber is cut from Redis at %s (%s): reconnecting", self.address, why)
        self._lost.set()

    def _on_reply(self, reply: Any) -> None:
        self._last_heard = self._loop.time()
        if isinstance(reply, list) and len(reply) >= 3:
            kind = reply[0]
            if kind == b"message":
                self._on_message(reply[1], reply[2])
                return
            if kind == b"subscribe":
                self._confirmed(reply[1])
            return
        if isinstance(reply, hiredis.ReplyError):
            log.error("Redis refused a subscriber command: %s", reply)

    def _confirmed(self, channel: bytes) -> None:
        if self._resync_due:
            # The first confirmation of a resubscription: one SUBSCRIBE for all, so all are in place.
            self._resync_due = False
            self._on_resync()
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
