"""``python -m securechat.bench``: run the benchmark, print the table, write JSON.

Full run (about a quarter of an hour on 2 cores)::

    python -m securechat.bench --out bench-results.json

CI mode (seconds)::

    python -m securechat.bench --quick --json-out /tmp/bench.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

from . import nodes, sections
from .report import table
from .runner import KeyPool
from .servers import (
    ServerProcess,
    baseline_tree,
    redis_server_path,
    securechat_server_available,
    server_help,
    start_server,
    uvloop_available,
)


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE towards ``wanted`` (children inherit it); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _commit() -> str:
    """The commit measured: $SECURECHAT_BENCH_COMMIT, else git's HEAD (+ "-dirty" for local edits)."""
    if os.environ.get("SECURECHAT_BENCH_COMMIT"):
        return os.environ["SECURECHAT_BENCH_COMMIT"]
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(
            ["git", "-C", here, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return f"{head}-dirty" if head and dirty else head or "unknown"


def _baseline_commit() -> str | None:
    """The baseline variant's tree and commit ($SECURECHAT_BENCH_BASELINE_COMMIT says which), or None."""
    tree = baseline_tree()
    if tree is None:
        return None
    return f"{os.environ.get('SECURECHAT_BENCH_BASELINE_COMMIT', 'unknown commit')} ({tree})"


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


SECTIONS = "throughput,latency,connections,crypto,scaling,nodes,rooms"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m securechat.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI mode: tiny counts, one repetition, seconds")
    parser.add_argument(
        "--out", "--json-out", dest="out", default="bench-results.json", help="JSON results file"
    )
    parser.add_argument("--reps", type=int, default=None, help="repetitions per figure (default 3, quick 1)")
    parser.add_argument("--connections", type=int, default=None, help="idle clients to hold (default 10000)")
    parser.add_argument("--sections", default=SECTIONS, help=f"comma-separated subset of: {SECTIONS}")
    return parser.parse_args(argv)


def _meta(
    argv: list[str] | None, quick: bool, plan: sections.Plan, fd_limit: int, uvloop: bool, redis: str | None
) -> dict[str, Any]:
    return {
        "command": " ".join(["python -m securechat.bench", *(argv if argv is not None else sys.argv[1:])]),
        "mode": "quick" if quick else "full",
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "uvloop": uvloop,
        "redis_server": redis or SKIPPED_REDIS_REASON,
        "fd_limit": fd_limit,
        "reps": plan.reps,
        "load_workers": plan.workers,
        "loadavg_at_start": os.getloadavg(),
        "commit": _commit(),
        "baseline": _baseline_commit(),
    }


def _relay_variants(server_missing: str | None, uvloop: bool, quick: bool, redis: str | None) -> list[str]:
    variants: list[str] = []
    if server_missing is None:
        variants += ["securechat-uvloop", "securechat-asyncio"] if uvloop else ["securechat-asyncio"]
        # TLS against plaintext in the same run; the padding's cost in the full run only.
        variants += ["securechat-tls"] if quick else ["securechat-tls", "securechat-tls-nopad"]
        if uvloop and baseline_tree() and not quick:
            variants.append("securechat-baseline")
    variants.append("naive-asyncio")
    if uvloop and not quick:
        variants.append("naive-uvloop")
    if redis:
        variants.append("redis")
    return variants


def _start_relays(variants: list[str], help_text: str) -> dict[str, ServerProcess]:
    with concurrent.futures.ThreadPoolExecutor(len(variants)) as executor:
        started = executor.map(lambda v: start_server(v, help_text=help_text), variants)
        running = dict(zip(variants, started))
    _log(f"servers up: {', '.join(f'{v} :{s.port}' for v, s in running.items())}")
    return running


def _relay_sections(
    wanted: set[str], running: dict[str, ServerProcess], pool: KeyPool, plan: sections.Plan, redis: str | None
) -> dict[str, Any]:
    """The sections that measure running relays (and the crypto, which needs none)."""
    results: dict[str, Any] = {}
    if "crypto" in wanted:
        results["crypto"] = sections.timed(_log, "crypto", lambda: sections.client_crypto(plan, _log))
    if "throughput" in wanted:
        results["throughput"] = sections.timed(
            _log, "throughput", lambda: sections.throughput(running, pool, plan, _log)
        )
        if not redis:
            results["throughput"]["variants"]["redis"] = sections.SKIPPED_REDIS
    if "latency" in wanted:
        results["latency"] = sections.timed(_log, "latency", lambda: sections.latency(running, pool, plan, _log))
    if "scaling" in wanted:
        target = running.get("securechat-uvloop") or running.get("securechat-asyncio") or running["naive-asyncio"]
        baseline = running.get("securechat-baseline")  # before and after in the same repetitions
        results["scaling"] = sections.timed(_log, "scaling", lambda: sections.scaling(target, pool, plan, _log, baseline))
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    wanted = set(args.sections.split(","))
    plan = sections.Plan.make(args.quick, args.connections, args.reps)
    fd_limit = raise_fd_limit(2 * plan.connections + 1024)
    started = time.perf_counter()
    have_uvloop = uvloop_available()
    server_missing = securechat_server_available()
    redis = redis_server_path()
    results: dict[str, Any] = {"meta": _meta(argv, args.quick, plan, fd_limit, have_uvloop, redis)}
    relay_variants = _relay_variants(server_missing, have_uvloop, args.quick, redis)
    help_text = server_help() if server_missing is None else ""

    running: dict[str, ServerProcess] = {}
    try:
        if wanted & {"throughput", "latency", "scaling"}:
            running = _start_relays(relay_variants, help_text)
        pool = KeyPool()
        results.update(_relay_sections(wanted, running, pool, plan, redis))
        for server in running.values():
            server.stop()
        running.clear()
        if "rooms" in wanted:
            with_nodes = redis is not None and server_missing is None
            results["rooms"] = sections.timed(
                _log, "rooms", lambda: _rooms(plan, relay_variants, help_text, with_nodes)
            )
        if "connections" in wanted:
            variants = [v for v in relay_variants if v.startswith("securechat") and v != "securechat-tls-nopad"]
            if args.quick:  # one plaintext server and the TLS one
                variants = variants[:1] + [v for v in variants[1:] if v == "securechat-tls"]
            variants = variants or ["naive-asyncio"]
            results["connections"] = sections.timed(
                _log, "connections", lambda: sections.connections(variants, pool, plan, help_text, _log)
            )
            results["connections"]["fd_limit"] = fd_limit
        if "nodes" in wanted:
            results["nodes"] = (
                sections.timed(_log, "nodes", lambda: nodes.section(pool, plan, help_text, _log))
                if redis and server_missing is None
                else sections.SKIPPED_REDIS
            )
    finally:
        for server in running.values():
            server.stop()
    if server_missing is not None:
        results["meta"]["securechat_server"] = f"skipped: {server_missing}"
    results["meta"]["total_seconds"] = round(time.perf_counter() - started, 1)

    print(table(results))
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1, sort_keys=False)
        f.write("\n")
    _log(f"wrote {args.out} ({results['meta']['total_seconds']} s in all)")
    return 0


def _rooms(plan: sections.Plan, variants: list[str], help_text: str, with_nodes: bool) -> dict[str, Any]:
    """Section 6, with a securechat server of its own for the fan-out (none: seal/open only), and two
    nodes on a Redis of their own when there is a redis-server."""
    variant = next((v for v in variants if v.startswith("securechat")), None)
    server = start_server(variant, help_text=help_text) if variant is not None else None
    two = nodes.start_setup("redis-2-nodes-cross", help_text, 1000) if server is not None and with_nodes else None
    try:
        return sections.rooms(plan, _log, server, two)
    finally:
        for started in (server, two):
            if started is not None:
                started.stop()


SKIPPED_REDIS_REASON = sections.SKIPPED_REDIS

if __name__ == "__main__":
    raise SystemExit(main())
