"""The load generator: raw asyncio protocol clients in worker processes.

Each worker process is forked with a job description, opens its share of the
connections, logs every client in with the client library's own handshake
(:class:`~securechat.client.connection.ClientConnection`), reports ``ready`` and
waits for ``go``. The clients avoid everything a real client
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

Modules: :mod:`.loadclient` (one client: handshake, pre-built ``send`` frames),
:mod:`.worker` (a worker's clients, the byte-level message path, the modes),
:mod:`.redisref` (the Redis reference), and this one, the worker process's entry.
"""

from __future__ import annotations

import asyncio
import importlib
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .. import crypto
from .loadclient import ClientSpec
from .redisref import run_redis
from .worker import Worker, sleep_until


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


# --- worker process entry ---------------------------------------------------------------------


def worker_main(conn: Connection, job: dict[str, Any], key_pems: list[bytes]) -> None:
    """Entry point of one forked worker process."""
    try:
        use_uvloop(job.get("uvloop", True))
        keys = [load_private_key(pem) for pem in key_pems]
        worker = Worker(job, keys)
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
        await sleep_until(go["t_go"])
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
