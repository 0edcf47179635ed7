"""The five sections of the benchmark, each returning a JSON-ready dict.

Every figure is a median over repetitions with min and max; every comparison
is a ratio computed inside each repetition (the variants run back to back in
the same repetition), then summarised the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import crypto
from . import crypto_bench, room_fanout, rooms_bench
from .nodes import NodeSet
from .runner import KeyPool, Timing, run_idle, run_load
from .servers import ServerProcess, start_server
from .stats import percentile, summary

SKIPPED_REDIS = "skipped (redis-server not installed)"


@dataclass
class Plan:
    """Sizes and durations of one bench run (``--quick`` or full)."""

    quick: bool
    reps: int
    workers: int
    throughput_pairs: tuple[int, ...]
    throughput_timing: Timing
    latency_rates: tuple[int, ...]
    latency_pairs: int
    latency_timing: Timing
    connections: int
    connection_reps: int
    connection_budget_s: float
    scaling_users: tuple[int, ...]
    scaling_patterns: tuple[str, ...]
    scaling_timing: Timing
    nodes_pairs: int = 10  # the several-nodes section (securechat/bench/nodes.py)
    nodes_rate: int = 1000  # its fixed-rate latency, across nodes
    # Its throughput window. Warm-up 2 s: on Redis the first full windows of sends are all stored
    # before the first acks come back, which on a loaded 2-core machine takes over a second.
    nodes_timing: Timing = field(default_factory=lambda: Timing(warmup=2.0, duration=2.0, drain=5.0))

    @classmethod
    def make(cls, quick: bool, connections: int | None = None, reps: int | None = None) -> Plan:
        if quick:
            return cls(
                quick=True,
                reps=reps or 1,
                workers=2,
                throughput_pairs=(1, 10),
                throughput_timing=Timing(warmup=0.15, duration=0.4, drain=2.0),
                latency_rates=(1000,),
                latency_pairs=10,
                latency_timing=Timing(warmup=0.1, duration=0.5, drain=2.0),
                connections=connections or 200,
                connection_reps=1,
                connection_budget_s=20.0,
                scaling_users=(2, 20),
                scaling_patterns=("pairs", "fan-in", "fan-out"),
                scaling_timing=Timing(warmup=0.1, duration=0.3, drain=2.0),
                nodes_timing=Timing(warmup=2.0, duration=1.0, drain=3.0),
            )
        return cls(
            quick=False,
            reps=reps or 3,
            workers=2,
            throughput_pairs=(1, 10, 100),
            throughput_timing=Timing(warmup=0.5, duration=2.0, drain=5.0),
            latency_rates=(1000, 10_000),
            latency_pairs=100,
            latency_timing=Timing(warmup=0.5, duration=5.0, drain=5.0),
            connections=connections or 10_000,
            connection_reps=min(2, reps or 3),
            connection_budget_s=60.0,
            scaling_users=(2, 10, 100, 1000),
            scaling_patterns=("pairs", "fan-in", "fan-out"),
            scaling_timing=Timing(warmup=0.5, duration=2.0, drain=5.0),
        )


Log = Callable[[str], None]


def _rate_summaries(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "msgs_per_s": summary([r["msgs_per_s"] for r in runs], 0),
        "server_cpu": summary([r["server_cpu"] for r in runs], 3),
        "loadgen_cpu": summary([r["loadgen_cpu"] for r in runs], 3),
        "server_cpu_us_per_msg": summary([r["server_cpu_us_per_msg"] or 0.0 for r in runs], 2),
        "window_per_sender": runs[0]["window_per_sender"],
        "errors": _merge_errors(runs),
        "dropped_connections": sum(r["dropped_connections"] for r in runs),
        "queued_acks": sum(r["queued_acks"] for r in runs),
    }


def _merge_errors(runs: list[dict[str, Any]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for r in runs:
        for code, count in r["errors"].items():
            merged[code] = merged.get(code, 0) + count
    return merged


# --- 1. relay throughput -------------------------------------------------------------------


def throughput(servers: dict[str, ServerProcess], pool: KeyPool, plan: Plan, log: Log) -> dict[str, Any]:
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {
        v: {p: [] for p in plan.throughput_pairs} for v in servers
    }
    for rep in range(plan.reps):
        for pairs in plan.throughput_pairs:
            for variant, server in servers.items():
                mode = "redis" if variant == "redis" else "throughput"
                result = run_load(
                    server, pool, mode=mode, pattern="pairs", users=2 * pairs, workers=min(plan.workers, pairs),
                    timing=plan.throughput_timing, uvloop=True,
                )  # fmt: skip
                runs[variant][pairs].append(result)
                log(
                    f"throughput rep {rep + 1}/{plan.reps} pairs={pairs:<4} {variant:<20} "
                    f"{result['msgs_per_s']:>10,.0f} msg/s  server cpu {result['server_cpu']:.0%}  "
                    f"loadgen cpu {result['loadgen_cpu']:.0%}"
                )
    out: dict[str, Any] = {
        "pairs": list(plan.throughput_pairs),
        "seconds_per_rep": plan.throughput_timing.duration,
        "variants": {
            variant: {str(p): _rate_summaries(rs) for p, rs in per_pairs.items()}
            for variant, per_pairs in runs.items()
        },
        "ratios": {},
    }
    out["ratios"], out["cpu_ratios"] = _throughput_ratios(list(servers), runs, plan.throughput_pairs)
    # TLS against plaintext, inside each repetition.
    for key, (x, y) in _tls_ratio_pairs(servers).items():
        out["ratios"][key] = {
            str(p): summary([_ratio(r["msgs_per_s"], s["msgs_per_s"]) for r, s in zip(runs[x][p], runs[y][p])], 3)
            for p in plan.throughput_pairs
        }
    return out


def _throughput_ratios(
    variants: list[str], runs: dict[str, dict[int, list[dict[str, Any]]]], pairs: tuple[int, ...]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Throughput ratios (variant / baseline) and CPU-per-message ratios (baseline / variant), per repetition.

    The second is how many times less server CPU a message costs: on a shared machine the
    servers get unequal shares of the cores, and this ratio does not depend on the share.
    """
    rates: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    for variant in variants:
        for baseline in ("naive-asyncio", "naive-uvloop", "redis", "securechat-baseline"):
            if variant == baseline or baseline not in variants or variant == "redis":
                continue
            if not variant.startswith("securechat") and baseline != "redis":
                continue
            key = f"{variant}/{baseline}"
            rates[key] = {
                str(p): summary([_ratio(a["msgs_per_s"], b["msgs_per_s"]) for a, b in zip(runs[variant][p], runs[baseline][p])], 3)
                for p in pairs
            }
            if baseline != "redis":
                cpu[key] = {
                    str(p): summary(
                        [_ratio(b["server_cpu_us_per_msg"], a["server_cpu_us_per_msg"]) for a, b in zip(runs[variant][p], runs[baseline][p])],
                        3,
                    )
                    for p in pairs
                }
    return rates, cpu


def _ratio(a: float | None, b: float | None) -> float:
    return a / b if a and b else 0.0


def _tls_ratio_pairs(servers: dict[str, ServerProcess]) -> dict[str, tuple[str, str]]:
    """TLS against plaintext on the same loop, and the padding's cost: the pairs measured in this run."""
    plain = "securechat-uvloop"
    wanted = {
        f"securechat-tls/{plain}": ("securechat-tls", plain),
        f"securechat-tls-nopad/{plain}": ("securechat-tls-nopad", plain),
        "securechat-tls/securechat-tls-nopad": ("securechat-tls", "securechat-tls-nopad"),
    }
    return {key: pair for key, pair in wanted.items() if pair[0] in servers and pair[1] in servers}


# --- 2. latency ----------------------------------------------------------------------------------


def latency(servers: dict[str, ServerProcess], pool: KeyPool, plan: Plan, log: Log) -> dict[str, Any]:
    variants = {v: s for v, s in servers.items() if v != "redis"}
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {
        v: {r: [] for r in plan.latency_rates} for v in variants
    }
    for rep in range(plan.reps):
        for rate in plan.latency_rates:
            for variant, server in variants.items():
                result = run_load(
                    server, pool, mode="latency", pattern="pairs", users=2 * plan.latency_pairs,
                    workers=plan.workers, timing=plan.latency_timing, uvloop=True, rate=rate,
                )  # fmt: skip
                lat = result.pop("latencies_us")
                result["p50_ms"] = percentile(lat, 50) / 1000
                result["p99_ms"] = percentile(lat, 99) / 1000
                result["p999_ms"] = percentile(lat, 99.9) / 1000
                result["max_ms"] = (lat[-1] / 1000) if lat else float("nan")
                result["samples"] = len(lat)
                runs[variant][rate].append(result)
                log(
                    f"latency rep {rep + 1}/{plan.reps} rate={rate:<6} {variant:<20} p50 {result['p50_ms']:.2f} ms "
                    f"p99 {result['p99_ms']:.2f} ms p99.9 {result['p999_ms']:.2f} ms ({len(lat)} samples, "
                    f"lost {result['lost']}) server cpu {result['server_cpu']:.0%} loadgen cpu {result['loadgen_cpu']:.0%}"
                )
    return {
        "pairs": plan.latency_pairs,
        "rates": list(plan.latency_rates),
        "seconds_per_rep": plan.latency_timing.duration,
        "variants": {
            variant: {
                str(rate): {
                    "p50_ms": summary([r["p50_ms"] for r in rs], 3),
                    "p99_ms": summary([r["p99_ms"] for r in rs], 3),
                    "p999_ms": summary([r["p999_ms"] for r in rs], 3),
                    "max_ms": summary([r["max_ms"] for r in rs], 3),
                    "achieved_msgs_per_s": summary(
                        [r["samples"] / plan.latency_timing.duration for r in rs], 0
                    ),
                    "server_cpu": summary([r["server_cpu"] for r in rs], 3),
                    "loadgen_cpu": summary([r["loadgen_cpu"] for r in rs], 3),
                    "samples": sum(r["samples"] for r in rs),
                    "lost": sum(r["lost"] for r in rs),
                    "errors": _merge_errors(rs),
                }
                for rate, rs in per_rate.items()
            }
            for variant, per_rate in runs.items()
        },
    }


# --- 3. connections ---------------------------------------------------------------------------------


def connections(variants: list[str], pool: KeyPool, plan: Plan, help_text: str, log: Log) -> dict[str, Any]:
    out: dict[str, Any] = {"target": plan.connections, "budget_s": plan.connection_budget_s, "variants": {}}
    for variant in variants:
        runs = []
        for rep in range(plan.connection_reps):
            server = start_server(variant, help_text=help_text, max_connections=plan.connections + 100)
            try:
                result = run_idle(
                    server, pool, users=plan.connections, workers=plan.workers, uvloop=True,
                    budget_s=plan.connection_budget_s,
                )  # fmt: skip
                result["server_log_lines"] = server.log_lines
            finally:
                server.stop()
            runs.append(result)
            log(
                f"connections rep {rep + 1}/{plan.connection_reps} {variant:<20} {result['connected']}/"
                f"{plan.connections} in {result['accept_auth_s']:.2f} s, "
                f"{result['kib_per_connection'] or 0:.2f} KiB/conn, "
                f"server cpu {result['server_cpu_ms_per_auth'] or 0:.3f} ms/auth, failures {result['failures']}"
            )
        out["variants"][variant] = {
            "connected": summary([r["connected"] for r in runs], 0),
            "failed": sum(r["failed"] for r in runs),
            "not_attempted": summary([r["not_attempted"] for r in runs], 0),
            "failures": [f for r in runs for f in r["failures"]][:3],
            "accept_auth_s": summary([r["accept_auth_s"] for r in runs], 3),
            "auth_per_s": summary([r["auth_per_s"] or 0.0 for r in runs], 0),
            "server_cpu_ms_per_auth": summary([r["server_cpu_ms_per_auth"] or 0.0 for r in runs], 3),
            "loadgen_cpu_ms_per_auth": summary([r["loadgen_cpu_ms_per_auth"] or 0.0 for r in runs], 3),
            "server_cpu_share": summary([r["server_cpu_share"] or 0.0 for r in runs], 3),
            "kib_per_connection": summary([r["kib_per_connection"] or 0.0 for r in runs], 2),
            "rss_before_kib": summary([r["rss_before_kib"] for r in runs], 0),
            "rss_after_kib": summary([r["rss_after_kib"] for r in runs], 0),
        }
    return out


# --- 4. client crypto ---------------------------------------------------------------------------------


def client_crypto(plan: Plan, log: Log) -> dict[str, Any]:
    result = crypto_bench.run(quick=plan.quick)
    for name, r in result.items():
        log(
            f"crypto {name}: seal {r['seal_us']['median']:.0f} us (raw {r['raw_seal_us']['median']:.0f}, "
            f"x{r['seal_overhead']['median']:.2f}), open {r['open_us']['median']:.0f} us "
            f"(raw {r['raw_open_us']['median']:.0f}, x{r['open_overhead']['median']:.2f}), "
            f"keygen {r['keygen_ms']['median']:.0f} ms"
        )
    return result


# --- 6. rooms: seal/open at 10 and 100 members ------------------------------------------------------


def rooms(plan: Plan, log: Log, server: ServerProcess | None, two_nodes: NodeSet | None = None) -> dict[str, Any]:
    """Seal/open against the primitives; fan-out through ``server`` (a securechat variant) if there is one,
    and across ``two_nodes`` on Redis (sender on one, members on the other) if given."""
    result: dict[str, Any] = {"seal_open": rooms_bench.run(quick=plan.quick)}
    for name, r in result["seal_open"].items():
        log(
            f"rooms {name}: seal {r['seal_us']['median']:.0f} us (raw {r['raw_seal_us']['median']:.0f}, "
            f"x{r['seal_overhead']['median']:.2f}), open {r['open_us']['median']:.0f} us "
            f"(raw {r['raw_open_us']['median']:.0f}, x{r['open_overhead']['median']:.2f}), "
            f"{r['message_frame_bytes']} bytes on the wire"
        )
    if server is None:
        result["fan_out"] = "skipped: no securechat server"
        return result
    keys = [crypto.generate_private_key(3072) for _ in range(2)]
    result["fan_out"] = {"server": server.variant, **room_fanout.run(server, keys, quick=plan.quick)}
    if two_nodes is not None:
        label = f"{two_nodes.variant}: sender on node 1, members on node 2, CPU of both nodes"
        result["fan_out_nodes"] = {"server": label, **room_fanout.run(two_nodes, keys, quick=plan.quick)}
    for key in ("fan_out", "fan_out_nodes"):
        for name, r in result.get(key, {}).items():
            if isinstance(r, dict):
                log(
                    f"rooms {key} {name}: {r['deliveries_per_s']:,.0f} deliveries/s, "
                    f"server {r['server_cpu_us_per_delivery']:.0f} us CPU per delivery"
                )
    return result


# --- 5. fan-in/out scaling ---------------------------------------------------------------------------


def scaling(server: ServerProcess, pool: KeyPool, plan: Plan, log: Log, baseline: ServerProcess | None = None) -> dict[str, Any]:
    """Pairs, fan-in and fan-out at each user count; with ``baseline``, each load on it right after."""
    servers = [server] if baseline is None else [server, baseline]
    runs: dict[str, dict[str, dict[int, list[dict[str, Any]]]]] = {
        s.variant: {p: {u: [] for u in plan.scaling_users} for p in plan.scaling_patterns} for s in servers
    }
    for rep in range(plan.reps):
        for users in plan.scaling_users:
            for pattern in plan.scaling_patterns:
                if users == 2 and pattern != "pairs":
                    continue  # with two users every pattern is one pair
                for target in servers:
                    result = run_load(
                        target, pool, mode="throughput", pattern=pattern, users=users, workers=plan.workers,
                        timing=plan.scaling_timing, uvloop=True,
                    )  # fmt: skip
                    runs[target.variant][pattern][users].append(result)
                    log(
                        f"scaling rep {rep + 1}/{plan.reps} {target.variant} users={users:<5} {pattern:<8} "
                        f"{result['msgs_per_s']:>10,.0f} msg/s  server cpu {result['server_cpu']:.0%} "
                        f"({result['server_cpu_us_per_msg'] or 0:.1f} us/msg, {result['queued_acks']} acked queued)"
                    )
    out: dict[str, Any] = {
        "server": server.variant,
        "users": list(plan.scaling_users),
        "seconds_per_rep": plan.scaling_timing.duration,
        "patterns": _scaling_summaries(runs[server.variant]),
    }
    if baseline is not None:  # CPU per message, baseline / this, per repetition: how many times less here
        base = runs[baseline.variant]
        out["baseline"] = {"server": baseline.variant, "patterns": _scaling_summaries(base)}
        out["cpu_ratios"] = {p: {
            str(u): summary([_ratio(b["server_cpu_us_per_msg"], a["server_cpu_us_per_msg"]) for a, b in zip(rs, base[p][u])], 3)
            for u, rs in per.items() if rs
        } for p, per in runs[server.variant].items()}  # fmt: skip
    return out


def _scaling_summaries(runs: dict[str, dict[int, list[dict[str, Any]]]]) -> dict[str, Any]:
    return {pattern: {str(u): _rate_summaries(rs) for u, rs in per.items() if rs} for pattern, per in runs.items()}


def timed(log: Log, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    start = time.perf_counter()
    result = fn()
    result["section_seconds"] = round(time.perf_counter() - start, 2)
    log(f"-- {name} done in {result['section_seconds']:.1f} s")
    return result
