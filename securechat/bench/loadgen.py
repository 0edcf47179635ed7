"""The load generator: raw asyncio protocol clients in worker processes.

Each worker process is forked with a job description, opens its share of the
connections, logs every client in with the real ``hello``/``challenge``/``auth``
handshake (a PSS signature from :func:`securechat.crypto.sign_auth`), reports
``ready`` and waits for ``go``. The clients avoid everything a real client
spends time on that the server does not see: the envelope of each route is
sealed once in advance and only its ``id`` is replaced per message (the bytes
on the wire have the size and shape of a real envelope; the signature of the
copies would not verify at a recipient, which the server cannot check), frames
are split and classified with byte searches instead of a JSON parse, and the
replies a batch of frames causes go out in one write.

Modes:

``throughput``
    Senders keep ``window`` messages in flight, topping up as ``delivered``
    acks arrive; receivers answer every ``message`` with ``received``. Acks
    that arrive inside the measuring window are counted.
``latency``
    Senders send at a fixed total rate, spread evenly over time and senders;
    each pair lives in one worker, so send and receive times are read from the
    same clock (``time.perf_counter_ns``).
``idle``
    Connect and authenticate, report how long it took, hold until told to close.
``redis``
    The same payloads published to Redis channels and read by subscribers
    (RESP spoken directly; publishers pipeline under a window of replies).
"""

from __future__ import annotations

import asyncio
import heapq
import importlib
import json
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, TypeVar, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .. import crypto
from ..encoding import b64decode, b64encode
from ..protocol import encode_body, encode_frame

TEXT = ("Benchmark message: the quick brown fox jumps over the lazy dog, again and again. " * 3)[:200]

# Any JSON encoder's spacing is accepted: the bench's naive relay uses json.dumps defaults.
_TYPE_RE = re.compile(rb'"type":\s*"([a-z_]+)"')
_ID_RE = re.compile(rb'"id":\s*"([0-9a-f]{32})"')
_FROM_RE = re.compile(rb'"from":\s*"([a-z0-9_-]{1,32})"')
_CODE_RE = re.compile(rb'"code":\s*"([a-z_]+)"')
_DELIVERED_RE = re.compile(rb'"status":\s*"delivered"')
_ID_PLACEHOLDER = "f" * 32
_REDIS_MESSAGE = b"$7\r\nmessage\r\n"


def load_private_key(pem: bytes) -> crypto.PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def private_key_pem(key: crypto.PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def use_uvloop(enabled: bool) -> str:
    """Install uvloop's policy when asked and available; return the loop's name."""
    if enabled:
        try:
            uvloop = importlib.import_module("uvloop")  # optional: securechat[fast]
        except ImportError:
            return "asyncio"
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    return "asyncio"


@dataclass
class Route:
    """Pre-built bytes of a ``send`` frame to one recipient, split around the envelope id."""

    head: bytes
    tail: bytes

    def frame(self, msg_id: bytes) -> bytes:
        return self.head + msg_id + self.tail


def build_route(
    sender_key: crypto.PrivateKey, sender: str, recipient: str, recipient_key: crypto.PublicKey
) -> Route:
    envelope = crypto.seal_envelope(
        sender_key, recipient_key, sender, recipient, TEXT, msg_id=_ID_PLACEHOLDER
    )
    body = encode_body({"type": "send", "to": recipient, "envelope": envelope})
    head, tail = body.split(_ID_PLACEHOLDER.encode(), 1)
    return Route(head=len(body).to_bytes(4, "big") + head, tail=tail)


@dataclass
class ClientSpec:
    name: str
    key_index: int
    targets: list[str] = field(default_factory=list)  # recipients, round robin (senders only)
    uid: int = 0  # unique per sender in the whole run: first 8 hex digits of its ids


class HandshakeError(Exception):
    pass


class LoadClient(asyncio.Protocol):
    """One protocol client; the worker owns the counters it updates."""

    def __init__(self, worker: Worker, spec: ClientSpec) -> None:
        self.worker = worker
        self.spec = spec
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.handshake_frames: list[dict[str, Any]] = []
        self.handshake_waiter: asyncio.Future[None] | None = None
        self.open = False
        self.closed = asyncio.get_running_loop().create_future()
        self.routes: list[Route] = []
        self.next_route = 0
        self.seq = 0
        self.inflight = 0
        self.sending = False

    # --- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.open:
            self.worker.dropped += 1
        self.open = False
        if not self.closed.done():
            self.closed.set_result(None)
        if self.handshake_waiter is not None and not self.handshake_waiter.done():
            self.handshake_waiter.set_exception(HandshakeError("connection closed during handshake"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        n = len(buf)
        pos = 0
        bodies: list[bytes] = []
        while n - pos >= 4:
            end = pos + 4 + int.from_bytes(buf[pos : pos + 4], "big")
            if end > n:
                break
            bodies.append(bytes(buf[pos + 4 : end]))
            pos = end
        if pos:
            del buf[:pos]
        if not bodies:
            return
        if self.open:
            self.worker.on_frames(self, bodies)
        else:
            self.handshake_frames.extend(json.loads(b) for b in bodies)
            if self.handshake_waiter is not None and not self.handshake_waiter.done():
                self.handshake_waiter.set_result(None)

    # --- handshake ----------------------------------------------------------------

    async def _next_frame(self, timeout: float) -> dict[str, Any]:
        while not self.handshake_frames:
            self.handshake_waiter = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self.handshake_waiter, timeout)
        return self.handshake_frames.pop(0)

    async def _expect(self, kind: str, timeout: float) -> dict[str, Any]:
        while True:
            frame = await self._next_frame(timeout)
            if frame.get("type") == kind:
                return frame
            if frame.get("type") == "error":
                raise HandshakeError(f"server error {frame.get('code')}: {frame.get('message')}")

    async def login(self, key: crypto.PrivateKey, pubkey_pem: str, timeout: float) -> None:
        assert self.transport is not None
        name = self.spec.name
        self.transport.write(
            encode_frame({"type": "hello", "version": 1, "name": name, "pubkey": pubkey_pem})
        )
        challenge = await self._expect("challenge", timeout)
        signature = crypto.sign_auth(
            key, b64decode(challenge["server_id"]), name, b64decode(challenge["nonce"])
        )
        self.transport.write(encode_frame({"type": "auth", "signature": b64encode(signature)}))
        await self._expect("welcome", timeout)
        self.open = True
        leftover = [encode_body(f) for f in self.handshake_frames]  # queued messages or presence
        self.handshake_frames.clear()
        if leftover:
            self.worker.on_frames(self, leftover)

    # --- sending ----------------------------------------------------------------------

    def next_id(self) -> bytes:
        self.seq += 1
        return b"%08x%024x" % (self.spec.uid, self.seq)

    def next_frames(self, count: int) -> list[bytes]:
        frames = []
        routes = self.routes
        for _ in range(count):
            route = routes[self.next_route]
            self.next_route = (self.next_route + 1) % len(routes)
            frames.append(route.frame(self.next_id()))
        return frames


class Worker:
    """One worker process's clients, counters and the loop that drives them."""

    def __init__(self, job: dict[str, Any], keys: list[crypto.PrivateKey], pems: list[str]) -> None:
        self.job = job
        self.mode: str = job["mode"]
        self.keys = keys
        self.pems = pems
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
                id_match = _ID_RE.search(body)
                from_match = _FROM_RE.search(body)
                if id_match is None or from_match is None:
                    self._error("bench_unparsed_message")
                    continue
                msg_id = id_match.group(1)
                replies.append(_received_frame(msg_id, from_match.group(1)))
                self.received += 1
                if self.mode == "latency":
                    sent = self.sent_at.pop(msg_id, None)
                    if sent is not None and sent >= 0:
                        self.latencies_us.append((now - sent) / 1000.0)
            elif kind == b"ack":
                if _DELIVERED_RE.search(body):
                    acked += 1
                else:
                    self.queued += 1
            elif kind == b"error":
                code = _CODE_RE.search(body)
                self._error(code.group(1).decode() if code else "unknown")
        if acked:
            self.delivered += acked
            if self.measuring:
                self.delivered_in_window += acked
            client.inflight -= acked
        if replies and client.transport is not None:
            client.transport.write(b"".join(replies))
        if acked and self.mode == "throughput" and client.sending:
            self.top_up(client)

    def _error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def top_up(self, client: LoadClient) -> None:
        room = self.window - client.inflight
        if room <= 0 or client.transport is None or not client.open:
            return
        client.inflight += room
        client.transport.write(b"".join(client.next_frames(room)))

    # --- connecting -------------------------------------------------------------------

    async def connect_all(self, specs: list[ClientSpec]) -> tuple[int, int, list[str]]:
        loop = asyncio.get_running_loop()
        host, port = self.job["host"], self.job["port"]
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
                try:
                    _, client = await loop.create_connection(lambda: LoadClient(self, spec), host, port)
                    await client.login(self.keys[spec.key_index], self.pems[spec.key_index], timeout)
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
        await _sleep_until(go["t_go"])
        senders = [c for c in self.clients if c.routes]
        for client in senders:
            client.sending = True
            self.top_up(client)
        await _sleep_until(go["t_meas0"])
        self.measuring = True
        await _sleep_until(go["t_meas1"])
        self.measuring = False
        for client in senders:
            client.sending = False
        await self._drain(senders, go["drain"])

    async def run_latency(self, go: dict[str, float]) -> None:
        senders = [c for c in self.clients if c.routes]
        rate_each = go["rate"] / go["total_senders"]
        interval_ns = int(1e9 / rate_each)
        t_go_ns = int(go["t_go"] * 1e9)
        meas0, meas1 = int(go["t_meas0"] * 1e9), int(go["t_meas1"] * 1e9)
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
                sent_at[msg_id] = stamp if in_window else -1
                if in_window:
                    self.sent_in_window += 1
                batch.setdefault(index, []).append(frame)
                heapq.heappush(heap, (due + interval_ns, index))
            for index, frames in batch.items():
                transport = senders[index].transport
                if transport is not None:
                    transport.write(b"".join(frames))
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
            "redis_received": self.redis_received,
            "cpu_s": _own_cpu_seconds(),
        }


def _received_frame(msg_id: bytes, sender: bytes) -> bytes:
    body = b'{"type":"received","id":"' + msg_id + b'","from":"' + sender + b'"}'
    return len(body).to_bytes(4, "big") + body


async def _sleep_until(t_monotonic: float) -> None:
    delay = t_monotonic - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


# --- Redis pub/sub reference --------------------------------------------------------------


def _resp(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class RedisSubscriber(asyncio.Protocol):
    def __init__(self, worker: Worker, channel: bytes) -> None:
        self.worker = worker
        self.channel = channel
        self.tail = b""
        self.subscribed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(_resp(b"SUBSCRIBE", self.channel))

    def data_received(self, data: bytes) -> None:
        chunk = self.tail + data
        if not self.subscribed.done() and b"subscribe" in chunk:
            self.subscribed.set_result(None)
        count = chunk.count(_REDIS_MESSAGE)
        if count and self.worker.measuring:
            self.worker.redis_received += count
        # Keep a short tail so a marker split across two reads is still counted once.
        keep = len(_REDIS_MESSAGE) - 1
        tail = chunk[-keep:]
        self.tail = tail if _REDIS_MESSAGE[:1] in tail else b""

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.dropped += 1


class RedisPublisher(asyncio.Protocol):
    def __init__(self, worker: Worker, channel: bytes, payload: Route, uid: int) -> None:
        self.worker = worker
        self.channel = channel
        self.payload = payload
        self.uid = uid
        self.seq = 0
        self.inflight = 0
        self.sending = False
        self.transport: asyncio.Transport | None = None
        self.head = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n" % (len(channel), channel)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.inflight -= data.count(b"\r\n")
        if self.sending:
            self.top_up()

    def top_up(self) -> None:
        room = self.worker.window - self.inflight
        if room <= 0 or self.transport is None:
            return
        self.inflight += room
        out = []
        prefix = b"%08x" % self.uid
        size = len(self.payload.head) + 32 + len(self.payload.tail)
        for _ in range(room):
            self.seq += 1
            out.append(
                b"%s$%d\r\n%s\r\n" % (self.head, size, self.payload.frame(prefix + b"%024x" % self.seq))
            )
        self.transport.write(b"".join(out))

    def connection_lost(self, exc: Exception | None) -> None:
        pass


async def run_redis(worker: Worker, job: dict[str, Any], conn: Connection) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    host, port = job["host"], job["port"]
    subs: list[RedisSubscriber] = []
    pubs: list[RedisPublisher] = []
    key = worker.keys[0]
    for pair in job["pairs"]:
        channel = pair["receiver"].encode()
        subs.append(await _connect(loop, RedisSubscriber(worker, channel), host, port))
    await asyncio.wait_for(asyncio.gather(*(s.subscribed for s in subs)), 10)
    for pair in job["pairs"]:
        payload = build_route(key, pair["sender"], pair["receiver"], key.public_key())
        channel = pair["receiver"].encode()
        pubs.append(await _connect(loop, RedisPublisher(worker, channel, payload, pair["uid"]), host, port))
    conn.send(("ready", {"connected": len(subs) + len(pubs), "failed": 0, "failures": []}))
    go = await loop.run_in_executor(None, conn.recv)
    await _sleep_until(go["t_go"])
    for pub in pubs:
        pub.sending = True
        pub.top_up()
    await _sleep_until(go["t_meas0"])
    worker.measuring = True
    await _sleep_until(go["t_meas1"])
    worker.measuring = False
    for pub in pubs:
        pub.sending = False
    await asyncio.sleep(0.05)
    conn.send(("drained", {}))
    await loop.run_in_executor(None, conn.recv)
    transports = [p.transport for p in subs] + [p.transport for p in pubs]
    for transport in transports:
        if transport is not None:
            transport.close()
    return worker.result()


_P = TypeVar("_P", bound=asyncio.Protocol)


async def _connect(loop: asyncio.AbstractEventLoop, protocol: _P, host: str, port: int) -> _P:
    await loop.create_connection(lambda: protocol, host, port)
    return protocol


# --- worker process entry ---------------------------------------------------------------------


def worker_main(conn: Connection, job: dict[str, Any], key_pems: list[bytes]) -> None:
    """Entry point of one forked worker process."""
    try:
        use_uvloop(job.get("uvloop", True))
        keys = [load_private_key(pem) for pem in key_pems]
        pems = [crypto.public_key_pem(k.public_key()) for k in keys]
        worker = Worker(job, keys, pems)
        result = asyncio.run(_worker_async(worker, job, conn))
        conn.send(("result", result))
    except BaseException as exc:  # noqa: BLE001 - reported to the orchestrator, which fails the run
        conn.send(("failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}"))
    finally:
        conn.close()


async def _worker_async(worker: Worker, job: dict[str, Any], conn: Connection) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    if job["mode"] == "redis":
        return await run_redis(worker, job, conn)
    specs = [ClientSpec(**spec) for spec in job["clients"]]
    t0 = time.perf_counter()
    if job["mode"] == "idle":
        go = await loop.run_in_executor(None, conn.recv)
        await _sleep_until(go["t_go"])
        t0 = time.perf_counter()
    connected, failed, failures = await worker.connect_all(specs)
    t_connected = time.perf_counter()
    worker.prepare_routes(job.get("key_of", {}))
    info = {
        "connected": connected,
        "failed": failed,
        "failures": failures,
        "connect_s": t_connected - t0,
        "skipped": worker.skipped,
        "t_connected": t_connected,
    }
    conn.send(("ready", info))
    go = await loop.run_in_executor(None, conn.recv)
    if job["mode"] == "throughput":
        await worker.run_throughput(go)
    elif job["mode"] == "latency":
        await worker.run_latency(go)
    if job["mode"] != "idle":
        # Wait until every worker has drained: a receiver that closed early would leave
        # another worker's sender waiting for acks (and the server storing messages).
        conn.send(("drained", {}))
        await loop.run_in_executor(None, conn.recv)
    # (idle: the orchestrator measured the server while we held; "go" meant close)
    await worker.close_all()
    return worker.result()
