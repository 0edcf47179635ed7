"""``python -m securechat.bench.listcost``: what ``list`` costs a server that holds many names.

Issue 13, items 2 and 10. A server subprocess (plaintext, default rates) whose
SQLite file holds ``--names`` names of 32 characters (written straight into it);
one logged-in client sends ``list`` at the default frame rate (200 a second) for
``--seconds`` and reads everything. Printed: the bytes and ``users`` frames it got,
the ``rate_limited`` answers, and the server's CPU time. With the baseline tree
(``$SECURECHAT_BENCH_BASELINE``, the bench's older server) the same is measured
against it: before paging every answer held every name.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import tempfile
import time
from typing import Any

from ..client.connection import ClientConnection
from ..crypto import generate_private_key
from ..protocol import FrameDecoder, encode_frame
from .servers import ServerProcess, baseline_tree, cpu_seconds, securechat_argv, server_help

THROTTLES = ("--rate", "--burst")  # the bench lifts them; here the defaults are the point


def start(variant: str, names: int) -> ServerProcess:
    """A server with the default rates and ``names`` registrations in its database."""
    workdir = tempfile.mkdtemp(prefix=f"securechat-listcost-{variant}-")
    env = {"PYTHONPATH": baseline_tree() or ""} if variant == "securechat-baseline" else {}
    argv = securechat_argv(variant, workdir, server_help(env or None), 100)
    for option in THROTTLES:
        if option in argv:
            at = argv.index(option)
            del argv[at : at + 2]
    server = ServerProcess(variant, argv, env=env)
    server.workdir = workdir
    server.start()
    with sqlite3.connect(os.path.join(workdir, "bench.db")) as db:
        rows = [(f"n{i:06d}".ljust(32, "-"), "0" * 64) for i in range(names)]
        db.executemany("INSERT OR IGNORE INTO registrations VALUES (?, 'PEM', ?, 0)", rows)
    return server


async def flood(port: int, seconds: float) -> dict[str, Any]:
    """Log in, send ``list`` 20 at a time every 0.1 s for ``seconds``, count what comes back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**26)
    conn = ClientConnection("lister", generate_private_key(2048))
    decoder, got = FrameDecoder(1 << 26), {"bytes": 0, "users": 0, "rate_limited": 0}
    writer.write(conn.data_to_send())
    frames: list[dict[str, Any]] = []
    while len(frames) < 2:  # challenge, then (after auth) welcome
        frames += decoder.feed(await reader.read(65536))
        if len(frames) == 1 and not conn.data_to_send():
            conn.receive_frame(frames[0])
            writer.write(conn.data_to_send())

    async def read() -> None:
        while data := await reader.read(1 << 22):
            got["bytes"] += len(data)
            got["users"] += data.count(b'"type":"users"')
            got["rate_limited"] += data.count(b'"code":"rate_limited"')

    task = asyncio.create_task(read())
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        writer.write(encode_frame({"type": "list"}) * 20)
        await writer.drain()
        await asyncio.sleep(0.1)
    task.cancel()
    writer.close()
    return got


def measure(variant: str, names: int, seconds: float) -> dict[str, Any]:
    server = start(variant, names)
    try:
        before = cpu_seconds(server.pid)
        got = asyncio.run(flood(server.port, seconds))
        got["server_cpu_s"] = round(cpu_seconds(server.pid) - before, 2)
        got["mib"] = round(got["bytes"] / 2**20, 2)
        return {"variant": variant, "names": names, "seconds": seconds, **got}
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--names", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    variants = ["securechat-asyncio", *(["securechat-baseline"] if baseline_tree() else [])]
    for variant in variants:
        print(json.dumps(measure(variant, args.names, args.seconds)))


if __name__ == "__main__":
    main()
