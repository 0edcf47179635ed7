"""The results table (Markdown, so the same text goes into docs/performance.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _fmt(entry: Any, fmt: str = "{:,.0f}", scale: float = 1.0) -> str:
    if not isinstance(entry, dict) or entry.get("median") is None:
        return "—"
    med, lo, hi = (entry[k] * scale for k in ("median", "min", "max"))
    if entry.get("n", 1) <= 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(lo)}–{fmt.format(hi)})"


def _pct(entry: Any) -> str:
    return _fmt(entry, "{:.0%}")


def _throughput(tp: Any) -> list[str]:
    if not (isinstance(tp, dict) and "variants" in tp):
        return [f"\n### 1. Relay throughput: {tp}"]
    lines = [
        "",
        f"### 1. Relay throughput (messages delivered end to end per second, {tp['seconds_per_rep']} s windows)",
        "",
        "| server | pairs | msg/s | server CPU | load-gen CPU | server µs/msg |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for variant, per in tp["variants"].items():
        if not isinstance(per, dict):
            lines.append(f"| {variant} | | {per} | | | |")
            continue
        for pairs, r in per.items():
            lines.append(
                f"| {variant} | {pairs} | {_fmt(r['msgs_per_s'])} | {_pct(r['server_cpu'])} | "
                f"{_pct(r['loadgen_cpu'])} | {_fmt(r['server_cpu_us_per_msg'], '{:.1f}')} |"
            )
    if tp.get("ratios"):
        lines += [
            "",
            "| ratio (same repetition) | " + " | ".join(f"{p} pairs" for p in tp["pairs"]) + " |",
            "| --- |" + " ---: |" * len(tp["pairs"]),
        ]
        for key, per in tp["ratios"].items():
            lines.append(f"| {key} | " + " | ".join(_fmt(per[str(p)], "{:.2f}x") for p in tp["pairs"]) + " |")
    if tp.get("cpu_ratios"):
        lines += [
            "",
            "| server CPU per message, other / this (same repetition) | "
            + " | ".join(f"{p} pairs" for p in tp["pairs"])
            + " |",
            "| --- |" + " ---: |" * len(tp["pairs"]),
        ]
        for key, per in tp["cpu_ratios"].items():
            lines.append(f"| {key} | " + " | ".join(_fmt(per[str(p)], "{:.2f}x") for p in tp["pairs"]) + " |")
    return lines


def _latency(lat: Any) -> list[str]:
    if not (isinstance(lat, dict) and "variants" in lat):
        return [f"\n### 2. Latency: {lat}"]
    lines = [
        "",
        f"### 2. Latency, send to receive, {lat['pairs']} pairs at a steady rate",
        "",
        "| server | rate msg/s | p50 ms | p99 ms | p99.9 ms | server CPU | load-gen CPU | samples | lost |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for variant, per in lat["variants"].items():
        for rate, r in per.items():
            lines.append(
                f"| {variant} | {int(rate):,} | {_fmt(r['p50_ms'], '{:.2f}')} | {_fmt(r['p99_ms'], '{:.2f}')} | "
                f"{_fmt(r['p999_ms'], '{:.2f}')} | {_pct(r['server_cpu'])} | {_pct(r.get('loadgen_cpu'))} | "
                f"{r['samples']:,} | {r['lost']} |"
            )
    return lines


def _connections(conn: Any) -> list[str]:
    if not (isinstance(conn, dict) and "variants" in conn):
        return [f"\n### 3. Connections: {conn}"]
    lines = [
        "",
        f"### 3. Idle authenticated connections (target {conn['target']:,})",
        "",
        (
            "| server | held | accept+auth s | logins/s | server CPU ms/login | load-gen CPU ms/login "
            "| KiB/connection | RSS after (MiB) |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for variant, r in conn["variants"].items():
        lines.append(
            f"| {variant} | {_fmt(r['connected'])} | {_fmt(r['accept_auth_s'], '{:.2f}')} | "
            f"{_fmt(r['auth_per_s'])} | {_fmt(r['server_cpu_ms_per_auth'], '{:.3f}')} | "
            f"{_fmt(r['loadgen_cpu_ms_per_auth'], '{:.3f}')} | "
            f"{_fmt(r['kib_per_connection'], '{:.2f}')} | {_fmt(r['rss_after_kib'], '{:.0f}', 1 / 1024)} |"
        )
    return lines


def _crypto(cr: Any) -> list[str]:
    if not isinstance(cr, dict):
        return [f"\n### 4. Client crypto: {cr}"]
    lines = [
        "",
        "### 4. Client crypto (µs per message; raw = sum of the primitives, same run)",
        "",
        "| key | seal | raw seal | seal overhead | open | raw open | open overhead | keygen ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    return lines + _seal_open_rows(cr, lambda r: f"RSA-{r['bits']}", lambda r: _fmt(r["keygen_ms"]))


def _seal_open_rows(per: dict[str, Any], first: Callable[[Any], str], last: Callable[[Any], str]) -> list[str]:
    """Rows of a seal/open table (sections 4 and 7): seal, raw seal, overhead, open, raw open, overhead."""
    return [
        f"| {first(r)} | {_fmt(r['seal_us'])} | {_fmt(r['raw_seal_us'])} | {_fmt(r['seal_overhead'], '{:.2f}x')} | "
        f"{_fmt(r['open_us'])} | {_fmt(r['raw_open_us'])} | {_fmt(r['open_overhead'], '{:.2f}x')} | {last(r)} |"
        for r in per.values()
        if isinstance(r, dict) and "seal_us" in r
    ]


def _scaling(sc: Any) -> list[str]:
    if not (isinstance(sc, dict) and "patterns" in sc):
        return [f"\n### 5. Scaling: {sc}"]
    lines = [
        "",
        f"### 5. Fan-in/out scaling ({sc['server']}; users = connected clients, all active)",
        "",
        "| pattern | users | msg/s | server CPU | server µs/msg |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    base = sc.get("baseline")
    if base is not None:
        lines[-2:] = [
            "| server | pattern | users | msg/s | server CPU | server µs/msg | acked queued |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
    for server, patterns in [(sc["server"], sc["patterns"])] + (
        [(base["server"], base["patterns"])] if base else []
    ):
        for pattern, per in patterns.items():
            for users, r in per.items():
                lines.append(
                    ("" if base is None else f"| {server} ")
                    + f"| {pattern} | {int(users):,} | {_fmt(r['msgs_per_s'])} | {_pct(r['server_cpu'])} | "
                    f"{_fmt(r['server_cpu_us_per_msg'], '{:.1f}')} |"
                    + ("" if base is None else f" {r['queued_acks']:,} |")
                )
    if base is not None:
        lines += [
            "",
            f"| server CPU per message, {base['server']} / {sc['server']} (same repetition) | users | ratio |",
            "| --- | ---: | ---: |",
        ]
        for pattern, per in sc["cpu_ratios"].items():
            lines += [f"| {pattern} | {int(users):,} | {_fmt(r, '{:.2f}x')} |" for users, r in per.items()]
    return lines


def _nodes(nd: Any) -> list[str]:  # size: one table per part of the section, read whole
    if not (isinstance(nd, dict) and "throughput" in nd):
        return [f"\n### 6. Several nodes: {nd}"]
    lines = [
        "",
        f"### 6. Several nodes (issue 11): {nd['pairs']} pairs; Redis with {nd['redis']}",
        "",
        "| setup | msg/s | nodes' CPU | nodes µs/msg | Redis µs/msg | scripts (EVALSHA)/msg | Redis calls/msg (in scripts too) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for setup, r in nd["throughput"].items():
        lines.append(
            f"| {setup} | {_fmt(r['msgs_per_s'])} | {_pct(r['server_cpu'])} | {_fmt(r['server_cpu_us_per_msg'], '{:.1f}')} | "
            f"{_fmt(r['redis_cpu_us_per_msg'], '{:.1f}')} | {_fmt(r['redis_scripts_per_msg'], '{:.2f}')} | "
            f"{_fmt(r['redis_calls_per_msg'], '{:.1f}')} |"
        )
    lines += [
        "",
        f"Cross-node / one-node-SQLite CPU per message: {_fmt(nd['cross_node_cpu_ratio'], '{:.2f}')}",
        "",
        f"| setup | at {nd['rate']:,} msg/s: p50 ms | p99 ms | p99.9 ms | achieved msg/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for setup, r in nd["latency"].items():
        lines.append(
            f"| {setup} | {_fmt(r['p50_ms'], '{:.2f}')} | {_fmt(r['p99_ms'], '{:.2f}')} | "
            f"{_fmt(r['p999_ms'], '{:.2f}')} | {_fmt(r['achieved_msgs_per_s'])} |"
        )
    lines += ["", "| idle | nodes | connected | KiB/connection | node CPU ms/login |", "| --- | ---: | ---: | ---: | ---: |"]
    for setup, r in nd["idle"].items():
        lines.append(
            f"| {setup} | {r['nodes']} | {_fmt(r['connected'])} | {_fmt(r['kib_per_connection'], '{:.2f}')} | "
            f"{_fmt(r['server_cpu_ms_per_auth'], '{:.3f}')} |"
        )
    return lines


def _rooms(ro: Any) -> list[str]:
    if not isinstance(ro, dict):
        return [f"\n### 7. Rooms: {ro}"]
    nodes = _room_fan_out(ro["fan_out_nodes"]) if "fan_out_nodes" in ro else []
    return _room_seal_open(ro.get("seal_open")) + _room_fan_out(ro.get("fan_out")) + nodes


def _room_fan_out(fo: Any) -> list[str]:
    if not isinstance(fo, dict):
        return [f"\nRoom fan-out: {fo}"]
    lines = [
        "",
        f"Room fan-out ({fo['server']}; every member online, confirming each copy):",
        "",
        "| members | messages | member deliveries/s | server µs CPU per delivery | message frame bytes |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in fo.values():
        if isinstance(r, dict):
            lines.append(
                f"| {r['members']} | {r['messages']} | {r['deliveries_per_s']:,.0f} | "
                f"{r['server_cpu_us_per_delivery']:,.0f} | {r['message_frame_bytes']:,} |"
            )
    return lines


def _room_seal_open(ro: Any) -> list[str]:
    if not isinstance(ro, dict):
        return [f"\n### 7. Rooms: {ro}"]
    lines = [
        "",
        "### 7. Rooms: one message, RSA-3072 (µs; raw = N wraps + sign + GCM, and unwrap + verify + GCM)",
        "",
        "| members | seal | raw seal | seal overhead | open | raw open | open overhead | message frame bytes |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    return lines + _seal_open_rows(ro, lambda r: str(r["members"]), lambda r: f"{r['message_frame_bytes']:,}")


# Section name in the results -> its renderer, in the order of the table.
RENDERERS: dict[str, Callable[[Any], list[str]]] = {
    "throughput": _throughput,
    "latency": _latency,
    "connections": _connections,
    "crypto": _crypto,
    "scaling": _scaling,
    "nodes": _nodes,
    "rooms": _rooms,
}


def table(results: dict[str, Any]) -> str:
    """Every section that ran, in order, as Markdown."""
    lines = ["Figures are median (min–max) over the repetitions of one run."]
    for section, render in RENDERERS.items():
        if results.get(section) is not None:
            lines += render(results[section])
    return "\n".join(lines)
