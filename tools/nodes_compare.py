"""The bench's several-nodes measurements, before and after in the same repetitions (not a test: a measurement).

The ``nodes`` section of ``python -m securechat.bench`` has no baseline variant; this runs its
own functions (:mod:`securechat.bench.nodes`) on two cross-node setups, one running this
checkout's code and one another checkout's (``--base``), alternated in each repetition, and
with ``--targets`` the one-node-SQLite comparison and the latency at 1,000 msg/s. Run from
the repository root::

    mkdir /tmp/base && git archive 8ee49b3 | tar -x -C /tmp/base
    python tools/nodes_compare.py --base /tmp/base --reps 5     # node and Redis CPU per message
    python tools/nodes_compare.py --targets --reps 3            # issue 11's two targets
    python tools/nodes_compare.py --replicas 1 --reps 5         # the cost of --redis-replicas 1 (WAIT)
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from securechat.bench import nodes
from securechat.bench.runner import KeyPool, Timing
from securechat.bench.servers import ServerProcess, securechat_argv, server_help

THROUGHPUT = Timing(warmup=2.0, duration=3.0, drain=5.0)
LATENCY = Timing(warmup=0.5, duration=5.0, drain=5.0)


REPLICAS: list[ServerProcess] = []  # stopped at the end


def cross_node(tree: Path | None, *, replica: bool = False, wait_for: int = 0) -> nodes.NodeSet:
    """Two nodes on one Redis (appendfsync always) running ``tree``'s code (None: this checkout's);
    ``replica``: the Redis has one; ``wait_for``: the nodes' ``--redis-replicas``."""
    env = {"PYTHONPATH": str(tree)} if tree else {}
    help_text = server_help(env or None)
    workdir = tempfile.mkdtemp(prefix="nodes-compare-")
    redis = nodes.start_redis(workdir, 2100)
    if replica:
        REPLICAS.append(copy := nodes.start_redis(tempfile.mkdtemp(prefix="nodes-compare-replica-"), 100))
        follow(copy.port, redis.port)
    url = f"redis://127.0.0.1:{redis.port}/0"
    extra = ["--redis-replicas", str(wait_for)] if wait_for else []
    started = []
    for _ in range(2):
        argv = [*securechat_argv("securechat-uvloop", workdir, help_text, 1000, redis_url=url), *extra]
        node = ServerProcess("redis-2-nodes-cross", argv, env=env)
        node.start()
        started.append(node)
    return nodes.NodeSet("redis-2-nodes-cross", started, redis)


def follow(port: int, primary: int) -> None:
    """Make the Redis at ``port`` a replica of ``primary`` and wait until it is in sync."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"*3\r\n$9\r\nREPLICAOF\r\n$9\r\n127.0.0.1\r\n$%d\r\n%d\r\n" % (len(str(primary)), primary))
        assert s.recv(64).startswith(b"+OK"), "REPLICAOF refused"
    deadline = time.monotonic() + 30
    while nodes.redis_info(port).get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica did not sync"
        time.sleep(0.1)


def line(name: str, r: dict[str, float]) -> str:
    return (
        f"{name:<24} {r['msgs_per_s']:>8,.0f} msg/s  nodes {r['server_cpu_us_per_msg'] or 0:6.1f} us/msg  "
        f"redis {r['redis_cpu_us_per_msg'] or 0:6.1f} us/msg  {r['redis_calls_per_msg'] or 0:4.1f} calls/msg  "
        f"{r['redis_scripts_per_msg'] or 0:4.2f} EVALSHA/msg  "
        f"nodes' CPU {r['server_cpu']:.0%}"
    )


def ratios(rep: str, cpu: dict[str, float], args: argparse.Namespace) -> None:
    """The nodes' CPU per message of each comparison asked for, as a ratio within this repetition."""
    after = cpu["after (this checkout)"]
    if args.base and after:
        print(f"{rep} nodes' CPU per message, before / after: {cpu['before (--base)'] / after:.2f}x")
    if args.targets and cpu["one node, SQLite"]:
        print(f"{rep} cross-node / one node CPU per message: {after / cpu['one node, SQLite']:.2f}x")
    if args.replicas and after:
        waiting = cpu[f"--redis-replicas {args.replicas}"]
        print(f"{rep} nodes' CPU per message, --redis-replicas {args.replicas} / 0: {waiting / after:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="the other checkout (before)")
    parser.add_argument("--targets", action="store_true", help="one node on SQLite against cross-node, and p99 at 1,000 msg/s")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=0, help="with a replica each: --redis-replicas N against 0")
    args = parser.parse_args()
    pool = KeyPool()
    setups = {"after (this checkout)": cross_node(None, replica=bool(args.replicas))}
    if args.replicas:
        setups[f"--redis-replicas {args.replicas}"] = cross_node(None, replica=True, wait_for=args.replicas)
    if args.base:
        setups["before (--base)"] = cross_node(args.base)
    if args.targets:
        setups["one node, SQLite"] = nodes.start_setup("sqlite-1-node", server_help(), 1000)
    try:
        for rep in range(args.reps):
            cpu = {}
            # The setup measured first in a repetition came out slower (fewer msg/s, more CPU per message) in
            # most repetitions whatever code it ran: the order alternates, so that neither side always has it.
            order = list(setups.items())
            for name, setup in order if rep % 2 == 0 else order[::-1]:
                r = nodes.throughput_run(setup, pool, 10, 2, THROUGHPUT)
                cpu[name] = r["server_cpu_us_per_msg"] or 0.0
                print(f"rep {rep + 1} {line(name, r)}", flush=True)
                if args.targets:
                    lat = nodes.latency_run(setup, pool, 100, 2, LATENCY, 1000)
                    print(f"rep {rep + 1} {name:<24} at 1,000 msg/s: p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, lost {lat['lost']}")
            ratios(f"rep {rep + 1}", cpu, args)
        if args.replicas and (waited := setups[f"--redis-replicas {args.replicas}"].redis) is not None:
            info = nodes.redis_info(waited.port)
            print("Redis of --redis-replicas:", *(f"{k[8:]} {info.get(k, '-')}" for k in ("cmdstat_wait", "cmdstat_evalsha")))
    finally:
        for setup in setups.values():
            setup.stop()
        for copy in REPLICAS:
            copy.stop()


if __name__ == "__main__":
    main()
