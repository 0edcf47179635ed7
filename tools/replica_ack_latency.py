"""How long a sender waits for `queued` with ``--redis-replicas 1`` against without (a measurement, not a test).

Two setups, each a Redis primary (append-only, fsync always) with one replica
and one node (the bench's plaintext node, :mod:`securechat.bench.servers`); alice sends to an offline name one message at a time and times
each `send` to its `ack`. The setups alternate in rounds of 100 sends, so both
see the same load; the figures are per setup over all rounds. Run from the
repository root::

    python tools/replica_ack_latency.py --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from securechat.bench.nodes import start_redis
from securechat.bench.rawclient import RawClient, envelope, identity_key, msg_id
from securechat.bench.servers import ServerProcess, redis_ask, securechat_argv, server_help, start_server

PER_ROUND = 100


async def round_trip(alice: RawClient, n: int) -> float:
    started = time.perf_counter()
    await alice.send_frame({"type": "send", "to": "carol", "envelope": envelope("alice", "carol", msg_id(n))})
    ack = await alice.recv_type("ack", 10.0)
    assert ack["status"] == "queued", ack
    return time.perf_counter() - started


async def main(rounds: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="replica-ack-"))
    procs: list[ServerProcess] = []
    clients: dict[str, RawClient] = {}
    times: dict[str, list[float]] = {"--redis-replicas 0": [], "--redis-replicas 1": []}
    help_text = server_help()
    try:
        for label in times:
            (folder / label[-1]).mkdir()
            primary = start_redis(str(folder / label[-1]), 100)  # append-only, fsync always
            replica = start_server("redis")  # no persistence of its own
            procs += [primary, replica]
            redis_ask(replica.port, "REPLICAOF", "127.0.0.1", str(primary.port))
            while b"master_link_status:up" not in redis_ask(replica.port, "INFO", "replication"):
                await asyncio.sleep(0.05)
            url = f"redis://127.0.0.1:{primary.port}/0"
            argv = securechat_argv("securechat-uvloop", str(folder), help_text, 100, redis_url=url)
            node = ServerProcess(label, [*argv, "--redis-replicas", label[-1]])
            node.start()
            procs.append(node)
            carol = await RawClient.connect(node.port, tls=False)
            await carol.login("carol", identity_key("carol"))  # then offline
            await carol.close()
            clients[label] = await RawClient.connect(node.port, tls=False)
            await clients[label].login("alice", identity_key("alice"))
        for r in range(rounds):
            for label, alice in clients.items():
                times[label] += [await round_trip(alice, r * PER_ROUND + i) for i in range(1, PER_ROUND + 1)]
        for alice in clients.values():
            await alice.close()
    finally:
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(folder, ignore_errors=True)
    for label, got in times.items():
        got.sort()
        p50, p99 = statistics.median(got), got[int(len(got) * 0.99) - 1]
        print(f"{label}: {len(got)} sends, `queued` after p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms")
    base, wait = (statistics.median(times[k]) for k in times)
    print(f"p50 with / without: {wait / base:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
