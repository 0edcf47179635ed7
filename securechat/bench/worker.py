"""One worker process's load clients: connecting them, the throughput and latency modes, counters.

The message path is byte-level: :meth:`Worker.on_frames` classifies frames with
byte searches (any JSON encoder's spacing is accepted: the bench's naive relay
uses ``json.dumps`` defaults) and answers every ``message`` with a ``received``
built from bytes; the replies a batch of frames causes go out in one write.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import re
import time
from typing import Any

from .. import crypto
from .loadclient import ClientSpec, LoadClient, Route, build_route, received_frame

_TYPE_RE = re.compile(rb'"type":\s*"([a-z_]+)"')
_ID_RE = re.compile(rb'"id":\s*"([0-9a-f]{32})"')
_FROM_RE = re.compile(rb'"from":\s*"([a-z0-9_-]{1,32})"')
_TS_RE = re.compile(rb'"server_ts":\s*([0-9]+)')
_CODE_RE = re.compile(rb'"code":\s*"([a-z_]+)"')
_DELIVERED_RE = re.compile(rb'"status":\s*"delivered"')
SLOW_NS = 5_000_000  # a latency from 5 ms on is kept with its time, to see when the slow ones were slow


class Worker:
    """One worker process's clients, counters and the loop that drives them."""

    def __init__(self, job: dict[str, Any], keys: list[crypto.PrivateKey]) -> None:
        self.job = job
        self.mode: str = job["mode"]
        self.keys = keys
        self.clients: list[LoadClient] = []
        self.window: int = job.get("window", 64)
        self.delivered = 0
        self.delivered_in_window = 0
        self.queued = 0
        self.received = 0
        self.dropped = 0
        self.errors: dict[str, int] = {}
        self.measuring = False
        self.sent_at: dict[bytes, int] = {}
        self.latencies_us: list[float] = []
        self.ack_sent_at: dict[bytes, int] = {}  # latency mode: a message's send, until its ``delivered`` ack
        self.ack_latencies_us: list[float] = []  # send to ``delivered``: the recipient's confirmation's way back
        self.slow: list[tuple[float, float, float]] = []  # the slow ones: sent (ms into the window), latency, stamped
        self.t_meas0_ns = 0
        self.wall_minus_perf_ns = time.time_ns() - time.perf_counter_ns()
        self.sent_in_window = 0
        self.redis_received = 0
        self.skipped = 0

    # --- frames from the server ---------------------------------------------------------

    def on_frames(self, client: LoadClient, bodies: list[bytes]) -> None:
        replies: list[bytes] = []
        now = time.perf_counter_ns()
        acked = 0
        for body in bodies:
            match = _TYPE_RE.search(body)
            kind = match.group(1) if match else b""
            if kind == b"message":
                reply = self._on_message(body, now)
                if reply:
                    replies.append(reply)
            elif kind == b"ack":
                if _DELIVERED_RE.search(body):
                    acked += 1
                    if self.mode == "latency":
                        self._on_ack(body, now)
                else:
                    self.queued += 1
            elif kind == b"error":
                code = _CODE_RE.search(body)
                self._error(code.group(1).decode() if code else "unknown")
        if acked:
            self._on_delivered(client, acked)
        if replies:
            client.write(b"".join(replies))
        if acked and self.mode == "throughput" and client.sending:
            self.top_up(client)

    def _on_message(self, body: bytes, now: int) -> bytes:
        """The ``received`` answering one ``message`` (empty if the frame makes no sense)."""
        id_match = _ID_RE.search(body)
        from_match = _FROM_RE.search(body)
        if id_match is None or from_match is None:
            self._error("bench_unparsed_message")
            return b""
        msg_id = id_match.group(1)
        self.received += 1
        if self.mode == "latency":
            sent = self.sent_at.pop(msg_id, None)
            if sent is not None and sent >= 0:
                self.latencies_us.append((now - sent) / 1000.0)
                if now - sent >= SLOW_NS:
                    self._slow(body, sent, now)
        return received_frame(msg_id, from_match.group(1))

    def _on_ack(self, body: bytes, now: int) -> None:
        id_match = _ID_RE.search(body)
        sent = self.ack_sent_at.pop(id_match.group(1), -1) if id_match else -1
        if sent >= 0:
            self.ack_latencies_us.append((now - sent) / 1000.0)

    def _slow(self, body: bytes, sent: int, now: int) -> None:
        """Keep a slow message's send time, its latency, and how much of it came before the sender's node
        stamped it (the frame's ``server_ts``, the node's clock in ms: the rest is Redis and the recipient's node)."""
        ts = _TS_RE.search(body)
        before = int(ts.group(1)) - (sent + self.wall_minus_perf_ns) / 1e6 if ts else float("nan")
        self.slow.append(((sent - self.t_meas0_ns) / 1e6, (now - sent) / 1e6, before))

    def _on_delivered(self, client: LoadClient, acked: int) -> None:
        self.delivered += acked
        if self.measuring:
            self.delivered_in_window += acked
        client.inflight -= acked

    def _error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def top_up(self, client: LoadClient) -> None:
        room = self.window - client.inflight
        if room <= 0 or client.transport is None or not client.open:
            return
        client.inflight += room
        client.write(b"".join(client.next_frames(room)))

    # --- connecting -------------------------------------------------------------------

    async def connect_all(self, specs: list[ClientSpec]) -> tuple[int, int, list[str]]:
        loop = asyncio.get_running_loop()
        host, port, tls = self.job["host"], self.job["port"], self.job.get("tls", False)
        limit = asyncio.Semaphore(self.job.get("connect_concurrency", 64))
        failures: list[str] = []
        timeout = self.job.get("handshake_timeout", 30.0)
        budget = self.job.get("connect_budget_s")
        deadline = time.perf_counter() + budget if budget else None
        self.skipped = 0

        async def one(spec: ClientSpec) -> None:
            async with limit:
                if deadline is not None and time.perf_counter() > deadline:
                    self.skipped += 1  # out of time: counted, not attempted
                    return
                key = self.keys[spec.key_index]
                try:
                    target = spec.port or port  # several nodes: a client may have its own
                    _, client = await loop.create_connection(lambda: LoadClient(self, spec, key, tls), host, target)
                    await client.login(timeout)
                    self.clients.append(client)
                except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
                    failures.append(f"{type(exc).__name__}: {exc}"[:200])

        await asyncio.gather(*(one(spec) for spec in specs))
        return len(self.clients), len(failures), failures[:5]

    def prepare_routes(self, key_of: dict[str, int]) -> None:
        cache: dict[tuple[str, str], Route] = {}
        for client in self.clients:
            spec = client.spec
            for target in spec.targets:
                route = cache.get((spec.name, target))
                if route is None:
                    route = build_route(
                        self.keys[spec.key_index], spec.name, target, self.keys[key_of[target]].public_key()
                    )
                    cache[(spec.name, target)] = route
                client.routes.append(route)

    # --- modes ---------------------------------------------------------------------------

    async def run_throughput(self, go: dict[str, float]) -> None:
        await sleep_until(go["t_go"])
        senders = [c for c in self.clients if c.routes]
        for client in senders:
            client.sending = True
            self.top_up(client)
        await self.measuring_window(go)
        for client in senders:
            client.sending = False
        await self._drain(senders, go["drain"])

    async def measuring_window(self, go: dict[str, float]) -> None:
        """Count what arrives between the orchestrator's ``t_meas0`` and ``t_meas1``."""
        await sleep_until(go["t_meas0"])
        self.measuring = True
        await sleep_until(go["t_meas1"])
        self.measuring = False

    async def run_latency(self, go: dict[str, float]) -> None:
        senders = [c for c in self.clients if c.routes]
        rate_each = go["rate"] / go["total_senders"]
        interval_ns = int(1e9 / rate_each)
        t_go_ns = int(go["t_go"] * 1e9)
        meas0, meas1 = int(go["t_meas0"] * 1e9), int(go["t_meas1"] * 1e9)
        self.t_meas0_ns = meas0
        offset0 = go["sender_offset"]
        heap = [
            (t_go_ns + int((offset0 + i) * interval_ns / go["total_senders"]), i) for i in range(len(senders))
        ]
        heapq.heapify(heap)
        sent_at = self.sent_at
        while heap:
            now = time.perf_counter_ns()
            if now >= meas1:
                break
            due, index = heap[0]
            if due > now:
                await asyncio.sleep((due - now) / 1e9)
                continue
            batch: dict[int, list[bytes]] = {}
            stamp = time.perf_counter_ns()
            in_window = meas0 <= stamp < meas1
            while heap and heap[0][0] <= stamp:
                due, index = heapq.heappop(heap)
                client = senders[index]
                msg_id = client.next_id()
                frame = client.routes[0].frame(msg_id)
                sent_at[msg_id] = self.ack_sent_at[msg_id] = stamp if in_window else -1
                if in_window:
                    self.sent_in_window += 1
                batch.setdefault(index, []).append(frame)
                heapq.heappush(heap, (due + interval_ns, index))
            for index, frames in batch.items():
                senders[index].write(b"".join(frames))
        await self._drain(senders, go["drain"], latency=True)

    async def _drain(self, senders: list[LoadClient], seconds: float, latency: bool = False) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if latency:
                if not any(v >= 0 for v in self.sent_at.values()):
                    return
            elif all(c.inflight <= 0 for c in senders):
                return
            await asyncio.sleep(0.01)

    async def close_all(self) -> None:
        for client in self.clients:
            client.open = False  # our own close is not a drop
            if client.transport is not None:
                client.transport.close()
        if self.clients:
            await asyncio.wait([c.closed for c in self.clients], timeout=10)

    def result(self) -> dict[str, Any]:
        lost = sum(1 for v in self.sent_at.values() if v >= 0)
        return {
            "delivered": self.delivered,
            "delivered_in_window": self.delivered_in_window,
            "queued": self.queued,
            "received": self.received,
            "dropped": self.dropped,
            "errors": self.errors,
            "sent_in_window": self.sent_in_window,
            "lost": lost,
            "latencies_us": self.latencies_us,
            "ack_latencies_us": self.ack_latencies_us,
            "slow": self.slow,
            "redis_received": self.redis_received,
            "cpu_s": own_cpu_seconds(),
        }


async def sleep_until(t_monotonic: float) -> None:
    """Sleep until ``time.perf_counter()`` reaches ``t_monotonic`` (the orchestrator's schedule)."""
    delay = t_monotonic - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system
