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
    python tools/nodes_compare.py --tail --reps 5               # where p99 at 1,000 msg/s comes from
    python tools/nodes_compare.py --rates 1000,4000 --reps 3    # node CPU per message at equal offered rates

``--tail``: the latency at 1,000 msg/s cross-node with Redis's ``appendfsync always`` (as docs/deployment.md
recommends), ``everysec``, and ``everysec`` with a replica and ``--redis-replicas 1``; for each run, where the
slow messages were slow and how Redis's main thread spent the window (:mod:`securechat.bench.redistail`), and
how long the senders waited for ``delivered`` (send to ack: the recipient's confirmation's way back).

``--rates``: ``--targets``'s CPU ratio is taken at each setup's own saturation (one node on SQLite near 30,000
msg/s, where a loop turn carries many messages; the cross-node pair near 5,000, bounded by Redis's flushes), so
the two batch differently. This runs both at the same offered rates (the latency run's load generator: 100
pairs, a steady rate each) and gives the nodes' CPU per delivered message of each and their ratio, per rate.
A measurement beside the saturation figure, not another definition of the target.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from securechat.bench import nodes, redistail
from securechat.bench.runner import KeyPool, Timing
from securechat.bench.servers import ServerProcess, securechat_argv, server_help

THROUGHPUT = Timing(warmup=2.0, duration=3.0, drain=5.0)
LATENCY = Timing(warmup=0.5, duration=5.0, drain=5.0)


REPLICAS: list[ServerProcess] = []  # stopped at the end


def cross_node(tree: Path | None, *, replica: bool = False, wait_for: int = 0, fsync: str = "always") -> nodes.NodeSet:
    """Two nodes on one Redis (appendfsync ``fsync``) running ``tree``'s code (None: this checkout's);
    ``replica``: the Redis has one; ``wait_for``: the nodes' ``--redis-replicas``."""
    env = {"PYTHONPATH": str(tree)} if tree else {}
    help_text = server_help(env or None)
    workdir = tempfile.mkdtemp(prefix="nodes-compare-")
    redis = nodes.start_redis(workdir, 2100)
    redistail.command(redis.port, "CONFIG", "SET", "appendfsync", fsync)
    redistail.command(redis.port, "CONFIG", "SET", "latency-monitor-threshold", "1")  # ms: LATENCY LATEST's floor
    if replica:
        REPLICAS.append(copy := nodes.start_redis(tempfile.mkdtemp(prefix="nodes-compare-replica-"), 100))
        redistail.command(copy.port, "CONFIG", "SET", "appendfsync", fsync)
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


def per_node(r: dict[str, Any], messages: int) -> str:
    """Each node's CPU per message (µs), the sender's node first: "13.2+7.9"."""
    probe = r.get("probe") or {}
    return "+".join(f"{probe[k] / max(messages, 1) * 1e6:.1f}" for k in sorted(probe) if k.startswith("node") and k.endswith("_cpu_s"))


def line(name: str, r: dict[str, Any]) -> str:
    return (
        f"{name:<24} {r['msgs_per_s']:>8,.0f} msg/s  nodes {r['server_cpu_us_per_msg'] or 0:6.1f} us/msg ({per_node(r, r['delivered'])})  "
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


def summary(seen: list[dict[str, float]], args: argparse.Namespace) -> None:
    """Each setup's CPU per message and each ratio over all repetitions, median (min-max): on this machine one
    repetition moves by a fifth either way, so a target near a ratio is read from the spread, not one run."""
    if not seen:  # --reps 0: nothing was measured
        return
    print(f"over {len(seen)} repetitions:")
    for name in seen[0]:
        print(f"  {name:<24} {_spread([cpu[name] for cpu in seen])} us/msg")
    if args.targets:
        cross = [cpu["after (this checkout)"] / cpu["one node, SQLite"] for cpu in seen if cpu["one node, SQLite"]]
        under = sum(1 for r in cross if r <= 2.0)
        print(f"  cross-node / one node CPU per message {_spread(cross)}x; {under} of {len(cross)} at or under 2x")
    if args.base:
        gain = [cpu["before (--base)"] / cpu["after (this checkout)"] for cpu in seen if cpu["after (this checkout)"]]
        print(f"  before / after {_spread(gain)}x")


TAIL_SETUPS: dict[str, dict[str, Any]] = {
    "appendfsync always": {},
    "appendfsync everysec": {"fsync": "everysec"},
    "everysec + replica, WAIT": {"fsync": "everysec", "replica": True, "wait_for": 1},  # --redis-replicas 1
}


def tail_run(rep: int, name: str, setup: nodes.NodeSet, pool: KeyPool) -> dict[str, float]:
    """One latency run at 1,000 msg/s with Redis's main thread watched; prints where the time went."""
    assert setup.redis is not None
    redistail.command(setup.redis.port, "LATENCY", "RESET")
    setup.watch = redistail.StateSampler(setup.redis.pid).start()
    try:
        lat = nodes.latency_run(setup, pool, 100, 2, LATENCY, 1000)
    finally:
        setup.watch.stop()
        setup.watch = None
    spent = redistail.shares(lat["probe"], LATENCY.duration)
    where = redistail.split(lat["slow"])
    worst = redistail.worst_stalls(setup.redis.port)
    print(
        f"rep {rep} {name:<26} load {os.getloadavg()[0]:4.1f}  p50 {lat['p50_ms']:5.2f} ms  p99 {lat['p99_ms']:7.2f}  "
        f"p99.9 {lat['p999_ms']:7.2f}  lost {lat['lost']}  delivered ack p50 {lat['ack_p50_ms']:5.2f} p99 {lat['ack_p99_ms']:7.2f}",
        flush=True,
    )
    if where["slow"]:
        print(f"      {where['slow']:.0f} over {redistail.SLOW_MS:.0f} ms; their median {where['before_stamp_ms']:.1f} ms "
              f"before the sender's node stamped them, {where['after_stamp_ms']:.1f} after")
    print("      Redis's main thread: " + ", ".join(f"{k.replace('_', ' ')} {v:.0%}" for k, v in spent.items())
          + "; worst (ms): " + ", ".join(f"{k} {v}" for k, v in sorted(worst.items())), flush=True)
    return {
        "p50": lat["p50_ms"], "p99": lat["p99_ms"], "ack p50": lat["ack_p50_ms"], "ack p99": lat["ack_p99_ms"],
        "slow": where["slow"], "disk": spent.get("waiting_for_the_disk", 0.0), "idle": spent.get("idle", 0.0),
    }  # fmt: skip


def tail(args: argparse.Namespace, pool: KeyPool) -> None:
    """``--tail``: the three Redis set-ups of :data:`TAIL_SETUPS` (and ``--base``'s nodes), alternated in each repetition."""
    setups = {name: cross_node(None, **how) for name, how in TAIL_SETUPS.items()}
    if args.base:  # the same measurement of another checkout's nodes, on the recommended Redis
        setups["always, --base"] = cross_node(args.base)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in setups}
    try:
        for rep in range(args.reps):
            order = list(setups.items())
            for name, setup in order if rep % 2 == 0 else order[::-1]:
                runs[name].append(tail_run(rep + 1, name, setup, pool))
    finally:
        for setup in setups.values():
            setup.stop()
        for copy in REPLICAS:
            copy.stop()
    for name, got in runs.items():
        print(f"{name:<26}", "  ".join(f"{key} {_spread([r[key] for r in got])}" for key in got[0]))


def equal_rates(args: argparse.Namespace, pool: KeyPool) -> None:
    """``--rates``: one node on SQLite and the cross-node pair at the same offered rates, alternated in each repetition."""
    rates = [int(r) for r in args.rates.split(",")]
    setups = {"one node, SQLite": nodes.start_setup("sqlite-1-node", server_help(), 1000), "cross-node": cross_node(args.base)}
    cost: dict[tuple[str, int], list[float]] = {(name, rate): [] for name in setups for rate in rates}
    ratio: dict[int, list[float]] = {rate: [] for rate in rates}
    try:
        for rep in range(args.reps):
            for rate in rates:
                order = list(setups.items())
                for name, setup in order if (rep + rate) % 2 == 0 else order[::-1]:
                    lat = nodes.latency_run(setup, pool, 100, 2, LATENCY, rate)
                    # A setup that did not keep up queued: its CPU per message sent is not a steady rate's.
                    kept_up = lat["achieved_msgs_per_s"] >= 0.95 * rate and lat["p50_ms"] < 100 and not lat["lost"]
                    us = lat["server_cpu_us_per_msg"] or 0.0
                    cost[name, rate].append(us if kept_up else math.nan)
                    print(f"rep {rep + 1} {name:<17} offered {rate:>5,} msg/s  received {lat['achieved_msgs_per_s']:>7,.0f}  nodes "
                          f"{us:6.1f} us/msg ({per_node(lat, lat['sent_in_window'])})  nodes' CPU {lat['server_cpu']:4.0%}  p50 {lat['p50_ms']:6.2f} ms  "
                          f"p99 {lat['p99_ms']:7.2f}  lost {lat['lost']}  load {os.getloadavg()[0]:4.1f}"
                          f"{'' if kept_up else '  (queued, not a steady rate: left out)'}", flush=True)
                one, cross = cost["one node, SQLite", rate][-1], cost["cross-node", rate][-1]
                if one > 0 and not math.isnan(cross):  # a NaN (did not keep up) compares False
                    ratio[rate].append(cross / one)
                    print(f"rep {rep + 1} at {rate:,} msg/s cross-node / one node CPU per message: {ratio[rate][-1]:.2f}x")
    finally:
        for setup in setups.values():
            setup.stop()
    _marginal(rates, cost)
    for rate in rates:
        kept = {name: [us for us in cost[name, rate] if not math.isnan(us)] for name in setups}
        print(f"{rate:>6,} msg/s: " + ", ".join(f"{name} {_spread(got) if got else '-'} us/msg" for name, got in kept.items())
              + f", ratio {_spread(ratio[rate]) if ratio[rate] else '-'}x")


def _marginal(rates: list[int], cost: dict[tuple[str, int], list[float]]) -> None:
    """The CPU an extra message costs between two rates, from the same repetition: (cpu/s at b - cpu/s at a) / (b - a):
    what a node spends whatever the rate (small: timers, heartbeats) is left out."""
    for a, b in itertools.pairwise(sorted(rates)):
        extra: dict[str, list[float]] = {}
        for name in ("one node, SQLite", "cross-node"):
            pairs = zip(cost[name, a], cost[name, b], strict=True)
            extra[name] = [(ub * b - ua * a) / (b - a) for ua, ub in pairs]  # NaN where either queued
        both = [(o, c) for o, c in zip(extra["one node, SQLite"], extra["cross-node"], strict=True) if o > 0 and c > 0]
        if both:
            print(f"an extra message between {a:,} and {b:,} msg/s: one node {_spread([o for o, _ in both])} us, cross-node "
                  f"{_spread([c for _, c in both])} us, ratio {_spread([c / o for o, c in both])}x ({len(both)} repetitions)")


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="the other checkout (before)")
    parser.add_argument("--targets", action="store_true", help="one node on SQLite against cross-node, and p99 at 1,000 msg/s")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=0, help="with a replica each: --redis-replicas N against 0")
    parser.add_argument("--tail", action="store_true", help="p99 at 1,000 msg/s: appendfsync always, everysec, everysec + WAIT")
    parser.add_argument("--rates", help="comma-separated offered msg/s: node CPU per message of one node and cross-node at each")
    args = parser.parse_args()
    pool = KeyPool()
    if args.rates:  # with --base: the cross-node pair runs that checkout
        equal_rates(args, pool)
        return
    if args.tail:
        tail(args, pool)
        return
    setups = {"after (this checkout)": cross_node(None, replica=bool(args.replicas))}
    if args.replicas:
        setups[f"--redis-replicas {args.replicas}"] = cross_node(None, replica=True, wait_for=args.replicas)
    if args.base:
        setups["before (--base)"] = cross_node(args.base)
    if args.targets:
        setups["one node, SQLite"] = nodes.start_setup("sqlite-1-node", server_help(), 1000)
    seen: list[dict[str, float]] = []
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
            seen.append(cpu)
        summary(seen, args)
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
