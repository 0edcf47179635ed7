"""Delivery proven under faults (issue #4), with real processes on loopback.

Every test runs the real ``securechat-server`` and ``securechat-client --json``
processes, injects one fault (a recipient offline, ``kill -9`` of the server,
of the recipient's client or of the sender's client, a recipient that stops
reading) and checks protocol section 5's promise: every message sent reaches
its recipient, in order, and is shown exactly once. Counts observed are in the
test names and in every assertion message.

The server runs with a high ``--rate`` so the streams are limited by the
clients' RSA and fsync work, not by the per-connection rate limit (which has
its own tests in test_server.py).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.jsonclient import Event, JsonClientProcess, run_client
from tests.support.rawclient import RawClient, envelope, identity_key
from tests.support.serverproc import ServerProcess, server_process

# Generous: a loaded 2-core CI machine; each test also bounds every wait itself.
pytestmark = pytest.mark.timeout(240)

FAST = ["--rate", "100000", "--burst", "100000"]
LONG = 120.0


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[object]:
    """Start ``securechat-client --json`` processes; all are killed at the end of the test."""
    started: list[JsonClientProcess] = []

    def make(name: str, port: int, label: str = "") -> JsonClientProcess:
        client = JsonClientProcess(name, port, tmp_path / "homes", label=label)
        started.append(client)
        return client

    yield make
    for client in started:
        client.close()


def texts(n: int, tag: str = "m") -> list[str]:
    return [f"{tag}{i:05d}" for i in range(n)]


def shown(client: JsonClientProcess, sender: str) -> list[Event]:
    return client.of_kind("message", **{"from": sender})


def acked_ids(client: JsonClientProcess) -> set[str]:
    return {e["id"] for e in client.of_kind("ack")}


def check_exactly_once(
    messages: list[Event], sent_texts: list[str], label: str, *, ordered: bool = True
) -> None:
    got = [m["text"] for m in messages]
    dupes = len(got) - len(set(got))
    missing = sorted(set(sent_texts) - set(got))
    extra = sorted(set(got) - set(sent_texts))
    summary = (
        f"{label}: sent {len(sent_texts)}, shown {len(got)} ({len(set(got))} distinct), "
        f"{dupes} shown twice, {len(missing)} missing (first {missing[:5]}), {len(extra)} unexpected"
    )
    assert not missing and not extra and dupes == 0, summary
    ids = [m["id"] for m in messages]
    assert len(set(ids)) == len(ids), summary + f"; {len(ids) - len(set(ids))} ids shown twice"
    if ordered:
        out_of_order = sum(1 for a, b in zip(got, got[1:], strict=False) if a > b)
        assert got == sorted(got), summary + f"; {out_of_order} out of order"


def register(spawn: object, name: str, port: int) -> None:
    """Run ``name`` once so the server knows the name (and the client has a key)."""
    client = spawn(name, port, "-register")  # type: ignore[operator]
    client.wait_event("ready", name=name)
    assert client.finish() == 0, client.stderr_tail()


# --- 1. recipient offline ---------------------------------------------------------------------


@pytest.mark.slow
def test_offline_1000_delivered_in_order_once_and_kept_in_history(tmp_path: Path, spawn: object) -> None:
    n = 1000
    started = time.monotonic()
    with server_process(tmp_path / "server.db", FAST) as server:
        register(spawn, "bob", server.port)
        alice = spawn("alice", server.port)  # type: ignore[operator]
        alice.wait_event("ready")
        sent = texts(n)
        alice.send_in_background("bob", sent)
        alice.count_until("ack", n, LONG)
        statuses = {e["status"] for e in alice.of_kind("ack")}
        assert statuses == {"queued"}, f"bob was offline, yet acks were {statuses}"
        assert alice.finish() == 0, alice.stderr_tail()

        bob = spawn("bob", server.port)  # type: ignore[operator]
        bob.count_until("message", n, LONG)
        assert bob.finish() == 0, bob.stderr_tail()
        check_exactly_once(shown(bob, "alice"), sent, f"offline bob ({n} queued)")
        sent_ids = [e["id"] for e in alice.of_kind("sent")]
        assert [m["id"] for m in shown(bob, "alice")] == sent_ids, "bob's order is not alice's send order"
    # The history command, after both clients and the server stopped, shows the conversation.
    history = run_client(tmp_path / "homes", ["history", "--name", "bob", "alice", "--limit", str(n)])
    assert history.returncode == 0, history.stderr
    lines = [line for line in history.stdout.splitlines() if "alice -> bob: " in line]
    assert [line.split("alice -> bob: ", 1)[1] for line in lines] == sent, (
        f"history shows {len(lines)} of {n} messages"
    )
    print(f"offline: {n} queued, {n} delivered in order once, {len(lines)} in history "
          f"in {time.monotonic() - started:.1f} s")
