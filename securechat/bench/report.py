"""The results table (Markdown, so the same text goes into docs/performance.md)."""

from __future__ import annotations

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


def table(results: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    add("Figures are median (min–max) over the repetitions of one run.")
    tp = results.get("throughput")
    if isinstance(tp, dict) and "variants" in tp:
        add("")
        add(
            f"### 1. Relay throughput (messages delivered end to end per second, {tp['seconds_per_rep']} s windows)"
        )
        add("")
        add("| server | pairs | msg/s | server CPU | load-gen CPU | server µs/msg |")
        add("| --- | ---: | ---: | ---: | ---: | ---: |")
        for variant, per in tp["variants"].items():
            if not isinstance(per, dict):
                add(f"| {variant} | | {per} | | | |")
                continue
            for pairs, r in per.items():
                add(
                    f"| {variant} | {pairs} | {_fmt(r['msgs_per_s'])} | {_pct(r['server_cpu'])} | "
                    f"{_pct(r['loadgen_cpu'])} | {_fmt(r['server_cpu_us_per_msg'], '{:.1f}')} |"
                )
        if tp.get("ratios"):
            add("")
            add("| ratio (same repetition) | " + " | ".join(f"{p} pairs" for p in tp["pairs"]) + " |")
            add("| --- |" + " ---: |" * len(tp["pairs"]))
            for key, per in tp["ratios"].items():
                add(f"| {key} | " + " | ".join(_fmt(per[str(p)], "{:.2f}x") for p in tp["pairs"]) + " |")
    elif tp is not None:
        add(f"\n### 1. Relay throughput: {tp}")
    lat = results.get("latency")
    if isinstance(lat, dict) and "variants" in lat:
        add("")
        add(f"### 2. Latency, send to receive, {lat['pairs']} pairs at a steady rate")
        add("")
        add(
            "| server | rate msg/s | p50 ms | p99 ms | p99.9 ms | server CPU | load-gen CPU | samples | lost |"
        )
        add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for variant, per in lat["variants"].items():
            for rate, r in per.items():
                add(
                    f"| {variant} | {int(rate):,} | {_fmt(r['p50_ms'], '{:.2f}')} | {_fmt(r['p99_ms'], '{:.2f}')} | "
                    f"{_fmt(r['p999_ms'], '{:.2f}')} | {_pct(r['server_cpu'])} | {_pct(r.get('loadgen_cpu'))} | "
                    f"{r['samples']:,} | {r['lost']} |"
                )
    conn = results.get("connections")
    if isinstance(conn, dict) and "variants" in conn:
        add("")
        add(f"### 3. Idle authenticated connections (target {conn['target']:,})")
        add("")
        add(
            "| server | held | accept+auth s | logins/s | server CPU ms/login | load-gen CPU ms/login "
            "| KiB/connection | RSS after (MiB) |"
        )
        add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for variant, r in conn["variants"].items():
            add(
                f"| {variant} | {_fmt(r['connected'])} | {_fmt(r['accept_auth_s'], '{:.2f}')} | "
                f"{_fmt(r['auth_per_s'])} | {_fmt(r['server_cpu_ms_per_auth'], '{:.3f}')} | "
                f"{_fmt(r['loadgen_cpu_ms_per_auth'], '{:.3f}')} | "
                f"{_fmt(r['kib_per_connection'], '{:.2f}')} | {_fmt(r['rss_after_kib'], '{:.0f}', 1 / 1024)} |"
            )
    elif conn is not None:
        add(f"\n### 3. Connections: {conn}")
    cr = results.get("crypto")
    if isinstance(cr, dict):
        add("")
        add("### 4. Client crypto (µs per message; raw = sum of the primitives, same run)")
        add("")
        add("| key | seal | raw seal | seal overhead | open | raw open | open overhead | keygen ms |")
        add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in cr.values():
            if not isinstance(r, dict) or "seal_us" not in r:
                continue
            add(
                f"| RSA-{r['bits']} | {_fmt(r['seal_us'])} | {_fmt(r['raw_seal_us'])} | "
                f"{_fmt(r['seal_overhead'], '{:.2f}x')} | {_fmt(r['open_us'])} | {_fmt(r['raw_open_us'])} | "
                f"{_fmt(r['open_overhead'], '{:.2f}x')} | {_fmt(r['keygen_ms'])} |"
            )
    sc = results.get("scaling")
    if isinstance(sc, dict) and "patterns" in sc:
        add("")
        add(f"### 5. Fan-in/out scaling ({sc['server']}; users = connected clients, all active)")
        add("")
        add("| pattern | users | msg/s | server CPU | server µs/msg |")
        add("| --- | ---: | ---: | ---: | ---: |")
        for pattern, per in sc["patterns"].items():
            for users, r in per.items():
                add(
                    f"| {pattern} | {int(users):,} | {_fmt(r['msgs_per_s'])} | {_pct(r['server_cpu'])} | "
                    f"{_fmt(r['server_cpu_us_per_msg'], '{:.1f}')} |"
                )
    elif sc is not None:
        add(f"\n### 5. Scaling: {sc}")
    return "\n".join(lines)
