"""The several-nodes section (issue 11): what a message costs on one node and across two nodes on Redis.

Three setups, each measured the same way: one node on SQLite; one node on
Redis; two nodes on Redis with every sender on the first and every receiver on
the second, so each message crosses nodes. Redis runs as docs/deployment.md
recommends (append-only file, ``appendfsync always``). Per message: the nodes'
CPU (summed), Redis's CPU, and the commands Redis ran (top-level ones, and
every call including those inside the scripts), from ``INFO`` at both ends of
the measuring window. Then the latency at a fixed rate across nodes, and idle
connections spread over two nodes against one.
"""

from __future__ import annotations

import collections
import socket
import tempfile
from dataclasses import dataclass, field
from typing import Any

from .redistail import StateSampler
from .runner import KeyPool, Timing, run_idle, run_load
from .servers import ServerProcess, cpu_seconds, redis_server_path, securechat_argv
from .stats import percentile, summary

SETUPS = ("sqlite-1-node", "redis-1-node", "redis-2-nodes-cross")


@dataclass
class NodeSet:
    """Server nodes measured as one server (CPU and memory summed), and the Redis they share."""

    variant: str
    nodes: list[ServerProcess]
    redis: ServerProcess | None = None
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=40))
    watch: StateSampler | None = None  # Redis's main thread's states, read with its counters (redistail.py)

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def tls(self) -> bool:
        return False  # plaintext nodes: the section measures the message path, TLS has its own figures

    @property
    def receiver_port(self) -> int:
        return self.nodes[-1].port

    def cpu(self) -> float:
        return sum(node.cpu() for node in self.nodes)

    def rss(self) -> int:
        return sum(node.rss() for node in self.nodes)

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self.redis is not None:
            self.redis.stop()

    def redis_counters(self) -> dict[str, float]:
        """Redis's CPU seconds and command counts, and each node's CPU seconds, now (nothing of Redis without it)."""
        own = {f"node{i}_cpu_s": node.cpu() for i, node in enumerate(self.nodes)}  # the split: sender's, recipient's
        if self.redis is None:
            return own
        info = redis_info(self.redis.port)
        calls = sum(
            int(value.split("calls=", 1)[1].split(",", 1)[0])
            for key, value in info.items()
            if key.startswith("cmdstat_") and key not in ("cmdstat_info",)
        )
        scripts = info.get("cmdstat_evalsha", "calls=0,").split("calls=", 1)[1].split(",", 1)[0]
        states = self.watch.counts() if self.watch is not None else {}
        return {"redis_cpu_s": cpu_seconds(self.redis.pid), "redis_scripts": float(scripts), "redis_calls": float(calls), **states, **own}


def redis_info(port: int) -> dict[str, str]:
    """``INFO all`` of the Redis at ``port``, as key -> value (a plain socket: the bench needs no client)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"*2\r\n$4\r\nINFO\r\n$3\r\nall\r\n")
        data = b""
        while b"\r\n" not in data:
            data += s.recv(65536)
        header, _, rest = data.partition(b"\r\n")
        size = int(header[1:])
        while len(rest) < size:
            rest += s.recv(65536)
    out: dict[str, str] = {}
    for line in rest[:size].decode().splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value
    return out


def start_redis(workdir: str, max_clients: int) -> ServerProcess:
    """redis-server as deployment.md recommends it: append-only file, fsync on every write."""
    port = _free_port()
    argv = [
        redis_server_path() or "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no", "--dir", workdir,
        "--maxclients", str(max_clients),
    ]  # fmt: skip
    server = ServerProcess("redis", argv, ready_pattern=None, port=port)
    server.start()
    return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_setup(setup: str, help_text: str, max_connections: int) -> NodeSet:
    """Start one of :data:`SETUPS` (its own Redis, if any) and wait until every node listens."""
    workdir = tempfile.mkdtemp(prefix=f"securechat-bench-{setup}-")
    redis = start_redis(workdir, 2 * max_connections + 100) if setup.startswith("redis") else None
    url = f"redis://127.0.0.1:{redis.port}/0" if redis is not None else None
    count = 2 if setup == "redis-2-nodes-cross" else 1
    nodes = []
    try:
        for _ in range(count):
            argv = securechat_argv("securechat-uvloop", workdir, help_text, max_connections, redis_url=url)
            node = ServerProcess(setup, argv)
            node.start()
            nodes.append(node)
    except Exception:
        for node in nodes:
            node.stop()
        if redis is not None:
            redis.stop()
        raise
    made = NodeSet(setup, nodes, redis)
    made.tail = nodes[0].tail
    return made


def per_message(result: dict[str, Any]) -> dict[str, float | None]:
    """A run's costs per delivered message: Redis CPU (µs), script runs (EVALSHA), and every call inside them too."""
    delivered = result["delivered"] or 0
    probe = result.get("probe") or {}
    if not delivered:
        return {"redis_cpu_us_per_msg": None, "redis_scripts_per_msg": None, "redis_calls_per_msg": None}
    return {
        "redis_cpu_us_per_msg": probe["redis_cpu_s"] / delivered * 1e6 if "redis_cpu_s" in probe else None,
        "redis_scripts_per_msg": probe["redis_scripts"] / delivered if "redis_scripts" in probe else None,
        "redis_calls_per_msg": probe["redis_calls"] / delivered if "redis_calls" in probe else None,
    }


def throughput_run(setup: NodeSet, pool: KeyPool, pairs: int, workers: int, timing: Timing) -> dict[str, Any]:
    result = run_load(
        setup, pool, mode="throughput", pattern="pairs", users=2 * pairs, workers=min(workers, pairs),
        timing=timing, uvloop=True, receiver_port=setup.receiver_port, probe=setup.redis_counters,
    )  # fmt: skip
    result.update(per_message(result))
    return result


def latency_run(
    setup: NodeSet, pool: KeyPool, pairs: int, workers: int, timing: Timing, rate: int
) -> dict[str, Any]:
    result = run_load(
        setup, pool, mode="latency", pattern="pairs", users=2 * pairs, workers=workers, timing=timing,
        uvloop=True, rate=rate, receiver_port=setup.receiver_port, probe=setup.redis_counters,
    )  # fmt: skip
    lat, acks = result.pop("latencies_us"), result.pop("ack_latencies_us", [])
    result.update(
        p50_ms=percentile(lat, 50) / 1000, p99_ms=percentile(lat, 99) / 1000, samples=len(lat),
        ack_p50_ms=percentile(acks, 50) / 1000, ack_p99_ms=percentile(acks, 99) / 1000,
        p999_ms=percentile(lat, 99.9) / 1000, achieved_msgs_per_s=len(lat) / timing.duration,
    )  # fmt: skip
    # The load generator counts no `delivered` acks at a steady rate: the messages sent in the window (each
    # received, or counted lost) are what the window's CPU carried.
    sent = result.get("sent_in_window") or 0
    result["server_cpu_us_per_msg"] = result["server_cpu_s"] / sent * 1e6 if sent else None
    result.update(per_message(result))
    return result


def idle_run(setup: NodeSet, pool: KeyPool, users: int, workers: int, budget_s: float) -> dict[str, Any]:
    ports = tuple(node.port for node in setup.nodes)
    return run_idle(setup, pool, users=users, workers=workers, uvloop=True, budget_s=budget_s, ports=ports)


def summarise(runs: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    """Median, min and max of each of ``keys`` over ``runs`` (a missing figure counts as none)."""
    out: dict[str, Any] = {}
    for key in keys:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = summary(values, 3) if values else None
    return out


THROUGHPUT_KEYS = (
    "msgs_per_s", "server_cpu", "server_cpu_us_per_msg", "redis_cpu_us_per_msg", "redis_scripts_per_msg",
    "redis_calls_per_msg", "loadgen_cpu",
)  # fmt: skip
LATENCY_KEYS = ("p50_ms", "p99_ms", "p999_ms", "achieved_msgs_per_s", "server_cpu", "redis_cpu_us_per_msg")
IDLE_KEYS = ("connected", "kib_per_connection", "server_cpu_ms_per_auth", "accept_auth_s")


def section(pool: KeyPool, plan: Any, help_text: str, log: Any) -> dict[str, Any]:
    """Run the section: throughput and costs, latency at ``plan.nodes_rate``, idle connections."""
    tp: dict[str, list[dict[str, Any]]] = {s: [] for s in SETUPS}
    lat: dict[str, list[dict[str, Any]]] = {s: [] for s in SETUPS}
    running = {s: start_setup(s, help_text, 1000) for s in SETUPS}
    try:
        for rep in range(plan.reps):
            # The setup measured later in a repetition came out faster whatever it ran (tools/nodes_compare.py):
            # the order alternates, so that the cross-node / one-node ratio does not carry it.
            order = list(running.items())
            for name, setup in order if rep % 2 == 0 else order[::-1]:
                r = throughput_run(setup, pool, plan.nodes_pairs, plan.workers, plan.nodes_timing)
                tp[name].append(r)
                log(
                    f"nodes rep {rep + 1}/{plan.reps} {name:<20} {r['msgs_per_s']:>8,.0f} msg/s, nodes "
                    f"{r['server_cpu_us_per_msg'] or 0:.1f} us/msg, redis {r['redis_cpu_us_per_msg'] or 0:.1f} us/msg, "
                    f"{r['redis_scripts_per_msg'] or 0:.2f} scripts/msg ({r['redis_calls_per_msg'] or 0:.1f} calls)"
                )
                r = latency_run(setup, pool, plan.latency_pairs, plan.workers, plan.latency_timing, plan.nodes_rate)
                lat[name].append(r)
                log(f"nodes rep {rep + 1}/{plan.reps} {name:<20} at {plan.nodes_rate} msg/s: p50 "
                    f"{r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms ({r['samples']} samples, lost {r['lost']})")
    finally:
        for setup in running.values():
            setup.stop()
    idle = {name: idle_setup(name, pool, plan, help_text, log) for name in ("sqlite-1-node", "redis-2-nodes-cross")}
    ratio = [
        cross["server_cpu_us_per_msg"] / one["server_cpu_us_per_msg"]
        for cross, one in zip(tp["redis-2-nodes-cross"], tp["sqlite-1-node"], strict=True)
        if cross["server_cpu_us_per_msg"] and one["server_cpu_us_per_msg"]
    ]
    return {
        "pairs": plan.nodes_pairs,
        "rate": plan.nodes_rate,
        "redis": "appendonly yes, appendfsync always",
        "throughput": {name: summarise(runs, THROUGHPUT_KEYS) for name, runs in tp.items()},
        "latency": {name: summarise(runs, LATENCY_KEYS) for name, runs in lat.items()},
        "idle": idle,
        "cross_node_cpu_ratio": summary(ratio, 3) if ratio else None,
    }


def idle_setup(name: str, pool: KeyPool, plan: Any, help_text: str, log: Any) -> dict[str, Any]:
    setup = start_setup(name, help_text, plan.connections + 100)
    try:
        r = idle_run(setup, pool, plan.connections, plan.workers, plan.connection_budget_s)
    finally:
        setup.stop()
    log(f"nodes idle {name:<20} {r['connected']}/{plan.connections} in {r['accept_auth_s']:.1f} s, "
        f"{r['kib_per_connection'] or 0:.2f} KiB/conn over {len(setup.nodes)} node(s)")
    return {**summarise([r], IDLE_KEYS), "nodes": len(setup.nodes), "failures": r["failures"]}
