"""Orchestration: fork load-generator workers, time the measuring window, read the server."""

from __future__ import annotations

import itertools
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .. import crypto
from .loadgen import private_key_pem, worker_main
from .servers import cpu_seconds

_JOB_IDS = itertools.count(1)


class BenchError(RuntimeError):
    pass


class Measured(Protocol):
    """What the runner reads of a server under test: one process, or several nodes summed."""

    @property
    def variant(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def tail(self) -> Any: ...

    @property
    def tls(self) -> bool: ...

    def cpu(self) -> float: ...

    def rss(self) -> int: ...

    def kill(self) -> None: ...


Probe = Callable[[], dict[str, float]]  # counters read at both ends of the measuring window


@dataclass
class Timing:
    warmup: float  # seconds of load before the measuring window opens
    duration: float  # length of the measuring window
    drain: float = 3.0  # how long senders wait for outstanding acks afterwards


class KeyPool:
    """A few RSA-2048 identities shared by all load clients (the protocol's minimum size).

    The server ties a name to a key, not a key to a name, so many names may
    share one; 2048 bits keeps the clients' handshake signatures cheap.
    """

    def __init__(self, size: int = 4) -> None:
        self.keys = [crypto.generate_private_key(2048) for _ in range(size)]
        self.pems = [private_key_pem(k) for k in self.keys]

    def __len__(self) -> int:
        return len(self.keys)


def _window(senders: int) -> int:
    return max(8, min(512, 2048 // max(1, senders)))


def pattern_clients(pattern: str, users: int, job_id: int, keys: int) -> tuple[list[dict[str, Any]], int]:
    """Client specs for ``users`` connected users; returns (specs, number of senders).

    ``pairs``: users/2 sender->receiver pairs. ``fan-in``: users-1 senders to one
    receiver. ``fan-out``: one sender round-robin over users-1 receivers.
    Specs are listed so that a pair's two clients are adjacent.
    """
    specs: list[dict[str, Any]] = []
    uid_base = job_id * 100_000

    def spec(name: str, index: int, targets: list[str] | None = None, uid: int = 0) -> dict[str, Any]:
        return {"name": name, "key_index": index % keys, "targets": targets or [], "uid": uid}

    if pattern == "pairs":
        for i in range(max(1, users // 2)):
            receiver = f"j{job_id}r{i}"
            specs.append(spec(f"j{job_id}s{i}", 2 * i, [receiver], uid_base + i))
            specs.append(spec(receiver, 2 * i + 1))
        return specs, max(1, users // 2)
    if pattern == "fan-in":
        receiver = f"j{job_id}r0"
        specs.append(spec(receiver, 0))
        for i in range(users - 1):
            specs.append(spec(f"j{job_id}s{i}", i + 1, [receiver], uid_base + i))
        return specs, users - 1
    if pattern == "fan-out":
        receivers = [f"j{job_id}r{i}" for i in range(users - 1)]
        specs.append(spec(f"j{job_id}s0", 0, receivers, uid_base))
        specs.extend(spec(name, i + 1) for i, name in enumerate(receivers))
        return specs, 1
    raise ValueError(pattern)


def _split(specs: list[dict[str, Any]], workers: int, pattern: str) -> list[list[dict[str, Any]]]:
    parts: list[list[dict[str, Any]]] = [[] for _ in range(workers)]
    if pattern == "pairs":
        for i in range(0, len(specs), 2):
            parts[(i // 2) % workers].extend(specs[i : i + 2])
    else:
        for i, spec in enumerate(specs):
            parts[i % workers].append(spec)
    return [p for p in parts if p]


class Job:
    """One run of the load generator against one server, in forked worker processes."""

    def __init__(self, pool: KeyPool, jobs: list[dict[str, Any]]) -> None:
        ctx = multiprocessing.get_context("fork")
        self.conns = []
        self.procs = []
        for job in jobs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, job, pool.pems), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def gather(self, tag: str, timeout: float) -> list[dict[str, Any]]:
        out = []
        deadline = time.monotonic() + timeout
        for conn in self.conns:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                self.kill()
                raise BenchError(f"load worker did not report {tag!r} within {timeout:.0f} s")
            kind, payload = conn.recv()
            if kind == "failed":
                self.kill()
                raise BenchError(f"load worker failed: {payload}")
            if kind != tag:
                self.kill()
                raise BenchError(f"load worker said {kind!r}, expected {tag!r}")
            out.append(payload)
        return out

    def send(self, message: dict[str, Any]) -> None:
        for conn in self.conns:
            conn.send(message)

    def worker_cpu(self) -> float:
        total = 0.0
        for proc in self.procs:
            try:
                total += cpu_seconds(proc.pid or 0)
            except OSError:
                pass
        return total

    def join(self) -> None:
        for proc in self.procs:
            proc.join(10)
        self.kill()

    def kill(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def _check_ready(ready: list[dict[str, Any]], expected: int, server: Measured) -> None:
    connected = sum(r["connected"] for r in ready)
    if connected < expected:
        failures = [f for r in ready for f in r["failures"]]
        raise BenchError(
            f"{server.variant}: only {connected}/{expected} clients logged in: {failures[:3]} "
            f"server log: {list(server.tail)[-3:]}"
        )


def _load_jobs(mode: str, parts: list[list[dict[str, Any]]], common: dict[str, Any]) -> list[dict[str, Any]]:
    if mode != "redis":
        return [{**common, "clients": part} for part in parts]
    jobs = []
    for part in parts:
        pairs = [{"sender": s["name"], "receiver": s["targets"][0], "uid": s["uid"]} for s in part if s["targets"]]
        jobs.append({**common, "pairs": pairs})
    return jobs


def _drive(
    job: Job, server: Measured, parts: list[list[dict[str, Any]]], timing: Timing, rate: float, senders: int,
    probe: Probe | None = None,
) -> tuple[list[dict[str, Any]], float, float, float, dict[str, float]]:
    """Start the load, measure one window; (results, server CPU s, load-gen CPU s, wall s, probe deltas)."""
    t_go = time.perf_counter() + 0.2
    t_meas0 = t_go + timing.warmup
    t_meas1 = t_meas0 + timing.duration
    offsets = itertools.accumulate([0] + [sum(1 for s in p if s["targets"]) for p in parts])
    for conn, offset in zip(job.conns, offsets):
        conn.send(
            {
                "t_go": t_go,
                "t_meas0": t_meas0,
                "t_meas1": t_meas1,
                "drain": timing.drain,
                "rate": rate,
                "total_senders": senders,
                "sender_offset": offset,
            }
        )
    _sleep_until(t_meas0)
    cpu0, lg0, wall0, p0 = server.cpu(), job.worker_cpu(), time.perf_counter(), probe() if probe else {}
    _sleep_until(t_meas1)
    cpu1, lg1, wall1, p1 = server.cpu(), job.worker_cpu(), time.perf_counter(), probe() if probe else {}
    job.gather("drained", timing.drain + 60)
    job.send({"close": True})
    deltas = {key: p1[key] - p0[key] for key in p0}
    return job.gather("result", 60), cpu1 - cpu0, lg1 - lg0, wall1 - wall0, deltas


def _load_summary(
    results: list[dict[str, Any]], mode: str, cpu: float, loadgen: float, wall: float, duration: float
) -> dict[str, Any]:
    key = "redis_received" if mode == "redis" else "delivered_in_window"
    delivered = sum(r[key] for r in results)
    errors: dict[str, int] = {}
    for r in results:
        for code, count in r["errors"].items():
            errors[code] = errors.get(code, 0) + count
    out: dict[str, Any] = {
        "msgs_per_s": delivered / duration,
        "server_cpu": cpu / wall,
        "loadgen_cpu": loadgen / wall,
        "server_cpu_us_per_msg": cpu / delivered * 1e6 if delivered else None,
        "server_cpu_s": cpu,
        "delivered": delivered,
        "queued_acks": sum(r["queued"] for r in results),
        "dropped_connections": sum(r["dropped"] for r in results),
        "errors": errors,
    }
    if mode == "latency":
        out["latencies_us"] = sorted(x for r in results for x in r["latencies_us"])
        out["ack_latencies_us"] = sorted(x for r in results for x in r.get("ack_latencies_us", ()))
        out["slow"] = sorted(x for r in results for x in r.get("slow", ()))
        out["sent_in_window"] = sum(r["sent_in_window"] for r in results)
        out["lost"] = sum(r["lost"] for r in results)
    return out


def run_load(
    server: Measured,
    pool: KeyPool,
    *,
    mode: str,
    pattern: str,
    users: int,
    workers: int,
    timing: Timing,
    uvloop: bool,
    rate: float = 0.0,
    receiver_port: int = 0,
    probe: Probe | None = None,
) -> dict[str, Any]:
    """One throughput or latency measurement; returns rates, CPU shares and raw counts.

    ``receiver_port``: receivers log in there (another node) instead of ``server.port``;
    ``probe``'s counters are read at both ends of the window and their deltas returned under ``probe``.
    """
    job_id = next(_JOB_IDS)
    specs, senders = pattern_clients(pattern, users, job_id, len(pool))
    for spec in specs:
        if receiver_port and not spec["targets"]:
            spec["port"] = receiver_port
    parts = _split(specs, workers, pattern)
    common = {
        "mode": mode,
        "host": "127.0.0.1",
        "port": server.port,
        "tls": server.tls,
        "uvloop": uvloop,
        "window": _window(senders),
        "key_of": {s["name"]: s["key_index"] for s in specs},
    }
    job = Job(pool, _load_jobs(mode, parts, common))
    try:
        ready = job.gather("ready", 120)
        _check_ready(ready, sum(len(p) for p in parts) if mode != "redis" else 2 * senders, server)
        results, cpu, loadgen, wall, deltas = _drive(job, server, parts, timing, rate, senders, probe)
    finally:
        job.join()
    out = _load_summary(results, mode, cpu, loadgen, wall, timing.duration)
    out.update(window_per_sender=common["window"], senders=senders, users=len(specs), probe=deltas)
    return out


def run_idle(
    server: Measured,
    pool: KeyPool,
    *,
    users: int,
    workers: int,
    uvloop: bool,
    budget_s: float,
    concurrency: int = 64,
    ports: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Log up to ``users`` idle clients in within ``budget_s``, measure time and memory.

    ``ports``: spread the clients over these nodes in turn (``server`` sums their CPU and memory).

    The server is killed before the clients close: it is not reused, and a
    server that tells everyone about every departure would otherwise spend
    the next minutes on it.
    """
    job_id = next(_JOB_IDS)
    specs = [
        {"name": f"j{job_id}i{i}", "key_index": i % len(pool), "targets": [], "uid": 0,
         "port": ports[i % len(ports)] if ports else 0}
        for i in range(users)
    ]  # fmt: skip
    parts = _split(specs, workers, "idle")
    common = {
        "mode": "idle",
        "host": "127.0.0.1",
        "port": server.port,
        "tls": server.tls,
        "uvloop": uvloop,
        "connect_concurrency": concurrency,
        "handshake_timeout": 60.0,
        "connect_budget_s": budget_s,
    }
    job = Job(pool, [{**common, "clients": part} for part in parts])
    try:
        time.sleep(0.3)  # let the forked workers import and load keys before the clock starts
        rss0, cpu0, lg0 = server.rss(), server.cpu(), job.worker_cpu()
        t_go = time.perf_counter() + 0.1
        job.send({"t_go": t_go})
        ready = job.gather("ready", budget_s + 180)
        cpu1, lg1 = server.cpu(), job.worker_cpu()
        time.sleep(0.5)  # let the server settle (buffers freed, presence fan-out done)
        rss1 = server.rss()
        server.kill()
        job.send({"close": True})
        job.gather("result", 120)
    finally:
        job.join()
    return _idle_summary(
        ready, users, budget_s, t_go, server_cpu=cpu1 - cpu0, loadgen_cpu=lg1 - lg0, rss=(rss0, rss1)
    )


def _idle_summary(
    ready: list[dict[str, Any]],
    users: int,
    budget_s: float,
    t_go: float,
    *,
    server_cpu: float,
    loadgen_cpu: float,
    rss: tuple[int, int],
) -> dict[str, Any]:
    connected = sum(r["connected"] for r in ready)
    elapsed = max(r["t_connected"] for r in ready) - t_go
    rss0, rss1 = rss
    return {
        "users": users,
        "connected": connected,
        "failed": sum(r["failed"] for r in ready),
        "not_attempted": sum(r.get("skipped", 0) for r in ready),
        "budget_s": budget_s,
        "failures": [f for r in ready for f in r["failures"]][:3],
        "accept_auth_s": elapsed,
        "auth_per_s": connected / elapsed if elapsed > 0 else None,
        "server_cpu_s": server_cpu,
        "server_cpu_ms_per_auth": server_cpu / connected * 1e3 if connected else None,
        # Logging in costs the client a PSS signature: the clients may be what limits the rate.
        "loadgen_cpu_ms_per_auth": loadgen_cpu / connected * 1e3 if connected else None,
        "server_cpu_share": server_cpu / elapsed if elapsed > 0 else None,
        "rss_before_kib": rss0,
        "rss_after_kib": rss1,
        "kib_per_connection": (rss1 - rss0) / connected if connected else None,
    }


def _sleep_until(t: float) -> None:
    delay = t - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
