"""The benchmark command runs end to end in its CI mode and writes every section.

No timing assertions: shared machines drift. What is checked is that each
section ran against real servers and produced numbers (and that messages
actually flowed), so the bench cannot rot unnoticed.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from securechat.bench.report import table
from securechat.bench.servers import redis_server_path
from securechat.bench.stats import percentile, summary

pytestmark = pytest.mark.slow

SECTIONS = ("meta", "throughput", "latency", "connections", "crypto", "scaling", "nodes", "rooms")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_summary(entry: Any, where: str) -> None:
    assert isinstance(entry, dict), where
    for key in ("median", "min", "max"):
        assert _is_number(entry[key]), f"{where}.{key} = {entry.get(key)!r}"
    assert entry["min"] <= entry["median"] <= entry["max"], where


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "securechat.bench", "--quick", "--json-out", str(out)],
        capture_output=True,
        text=True,
        timeout=360,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Relay throughput" in proc.stdout
    data: dict[str, Any] = json.loads(Path(out).read_text())
    return data


def test_every_section_is_present(results: dict[str, Any]) -> None:
    for section in SECTIONS:
        assert section in results, section
    assert results["meta"]["mode"] == "quick"


def test_throughput_has_numbers_and_ratios(results: dict[str, Any]) -> None:
    variants = results["throughput"]["variants"]
    assert "naive-asyncio" in variants
    assert any(v.startswith("securechat") for v in variants)
    for variant, per_pairs in variants.items():
        if variant == "redis" and isinstance(per_pairs, str):
            assert per_pairs == "skipped (redis-server not installed)"
            continue
        for pairs, entry in per_pairs.items():
            for key in ("msgs_per_s", "server_cpu", "loadgen_cpu"):
                _check_summary(entry[key], f"{variant}[{pairs}].{key}")
            assert entry["msgs_per_s"]["median"] > 0, f"{variant} with {pairs} pairs delivered nothing"
            assert entry["dropped_connections"] == 0, (
                f"{variant} with {pairs} pairs: {entry['dropped_connections']} connection(s) dropped, "
                f"errors {entry.get('errors')}"
            )
    ratios = results["throughput"]["ratios"]
    assert any(key.endswith("/naive-asyncio") for key in ratios)
    for per_pairs in ratios.values():
        for entry in per_pairs.values():
            _check_summary(entry, "ratio")
    cpu_ratios = results["throughput"]["cpu_ratios"]
    assert any(key.startswith("securechat") and key.endswith("/naive-asyncio") for key in cpu_ratios)
    for per_pairs in cpu_ratios.values():
        for entry in per_pairs.values():
            _check_summary(entry, "CPU ratio")
            assert entry["median"] > 0


def test_latency_percentiles(results: dict[str, Any]) -> None:
    for variant, per_rate in results["latency"]["variants"].items():
        for rate, entry in per_rate.items():
            for key in ("p50_ms", "p99_ms", "p999_ms"):
                _check_summary(entry[key], f"{variant}@{rate}.{key}")
            assert entry["samples"] > 0
            assert entry["p50_ms"]["median"] <= entry["p999_ms"]["median"]


def test_connections_held(results: dict[str, Any]) -> None:
    conn = results["connections"]
    for variant, entry in conn["variants"].items():
        assert entry["connected"]["median"] == conn["target"], (variant, entry["failures"])
        for key in ("accept_auth_s", "kib_per_connection", "server_cpu_ms_per_auth"):
            _check_summary(entry[key], f"{variant}.{key}")


def test_crypto_overheads(results: dict[str, Any]) -> None:
    for name in ("rsa3072", "rsa2048"):
        entry = results["crypto"][name]
        for key in (
            "seal_us",
            "raw_seal_us",
            "seal_overhead",
            "open_us",
            "raw_open_us",
            "open_overhead",
            "keygen_ms",
        ):
            _check_summary(entry[key], f"{name}.{key}")


def test_rooms_seal_open_and_size(results: dict[str, Any]) -> None:
    # One node, and two nodes on Redis with every copy crossing nodes (where the bench found a redis-server).
    fan_outs = [results["rooms"]["fan_out"]]
    if redis_server_path() is not None:
        fan_outs.append(results["rooms"]["fan_out_nodes"])
    for fan_out in fan_outs:
        for members in (10, 100):
            delivered = fan_out[f"members{members}"]
            assert delivered["deliveries"] == delivered["messages"] * (members - 1), delivered
            assert _is_number(delivered["deliveries_per_s"]) and _is_number(delivered["server_cpu_us_per_delivery"])
    for members in (10, 100):
        entry = results["rooms"]["seal_open"][f"members{members}"]
        assert entry["members"] == members and entry["bits"] == 3072
        for key in ("seal_us", "raw_seal_us", "seal_overhead", "open_us", "raw_open_us", "open_overhead"):
            _check_summary(entry[key], f"rooms{members}.{key}")
    sizes = results["rooms"]["seal_open"]
    assert sizes["members10"]["message_frame_bytes"] < sizes["members100"]["message_frame_bytes"]
    assert sizes["members100"]["under_64_kib"], sizes["members100"]["message_frame_bytes"]


def test_scaling_patterns(results: dict[str, Any]) -> None:
    patterns = results["scaling"]["patterns"]
    assert set(patterns) == {"pairs", "fan-in", "fan-out"}
    for pattern, per_users in patterns.items():
        assert per_users, pattern
        for users, entry in per_users.items():
            _check_summary(entry["msgs_per_s"], f"{pattern}[{users}]")
            _check_summary(entry["server_cpu"], f"{pattern}[{users}].cpu")


def test_nodes_section_measured_every_setup(results: dict[str, Any]) -> None:
    nodes = results["nodes"]
    if isinstance(nodes, str):
        assert nodes == "skipped (redis-server not installed)"
        return
    assert set(nodes["throughput"]) == {"sqlite-1-node", "redis-1-node", "redis-2-nodes-cross"}
    for setup, entry in nodes["throughput"].items():
        _check_summary(entry["server_cpu"], f"{setup}.server_cpu")
        assert entry["msgs_per_s"]["median"] > 0, f"{setup} delivered nothing"
        if setup.startswith("redis"):  # Redis's own cost was read
            _check_summary(entry["redis_cpu_us_per_msg"], f"{setup}.redis_cpu_us_per_msg")
            _check_summary(entry["redis_calls_per_msg"], f"{setup}.redis_calls_per_msg")
    for setup, entry in nodes["latency"].items():
        _check_summary(entry["p99_ms"], f"{setup}.p99_ms")
    for setup, entry in nodes["idle"].items():
        assert entry["connected"]["median"] == results["connections"]["target"], (setup, entry["failures"])


def test_table_renders_every_section(results: dict[str, Any]) -> None:
    text = table(results)
    for heading in ("### 1.", "### 2.", "### 3.", "### 4.", "### 5.", "### 6.", "### 7."):
        assert heading in text


def test_stats_helpers() -> None:
    assert summary([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    values = sorted(float(i) for i in range(1, 1001))
    assert percentile(values, 50) == 500.0
    assert percentile(values, 99) == 990.0
    assert percentile(values, 99.9) == 999.0
    assert math.isnan(percentile([], 50))
