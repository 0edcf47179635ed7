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

import fcntl
import itertools
import struct
import termios
import time
from pathlib import Path

import pytest

from tests.support.jsonclient import run_client
from tests.support.nodes import start_restartable
from tests.support.rawclient import RawClient, envelope, identity_key
from tests.support.serverproc import ServerProcess, server_process
from tests.support.streams import FAST, LONG, Spawn, acked_ids, check_exactly_once, shown, texts

# Generous: a loaded 2-core CI machine; each test also bounds every wait itself.
pytestmark = pytest.mark.timeout(600)


def history_texts(home: Path, name: str, peer: str, limit: int) -> list[str]:
    """The texts ``securechat-client history`` shows for messages from ``peer`` to ``name``."""
    result = run_client(home, ["history", "--name", name, peer, "--limit", str(limit)])
    assert result.returncode == 0, result.stderr
    mark = f"{peer} -> {name}: "
    return [line.split(mark, 1)[1] for line in result.stdout.splitlines() if mark in line]


def wait_history(home: Path, name: str, peer: str, n: int, timeout: float = LONG) -> list[str]:
    """Poll the history command (a separate process, so a reader of the live file) until it holds ``n``."""
    deadline = time.monotonic() + timeout
    while True:
        kept = history_texts(home, name, peer, 2 * n)
        if len(set(kept)) >= n or time.monotonic() > deadline:
            return kept


def register(spawn_process: Spawn, name: str, port: int) -> None:
    """Run ``name`` once so the server knows the name (and the client has a key)."""
    client = spawn_process(name, port, "-register")
    client.wait_event("ready", name=name)
    assert client.finish() == 0, client.stderr_tail()


# --- 1. recipient offline ---------------------------------------------------------------------


@pytest.mark.slow
def test_offline_1000_delivered_in_order_once_and_kept_in_history(
    tmp_path: Path, homes: Path, spawn_process: Spawn
) -> None:
    n = 1000
    started = time.monotonic()
    with server_process(tmp_path / "server.db", FAST) as server:
        register(spawn_process, "bob", server.port)
        alice = spawn_process("alice", server.port)
        alice.wait_event("ready")
        sent = texts(n)
        alice.send_in_background("bob", sent)
        alice.count_until("ack", n, LONG)
        statuses = {e["status"] for e in alice.of_kind("ack")}
        assert statuses == {"queued"}, f"bob was offline, yet acks were {statuses}"
        assert alice.finish() == 0, alice.stderr_tail()

        bob = spawn_process("bob", server.port)
        bob.count_until("message", n, LONG)
        assert bob.finish() == 0, bob.stderr_tail()
        check_exactly_once(shown(bob, "alice"), sent, f"offline bob ({n} queued)")
        sent_ids = [e["id"] for e in alice.of_kind("sent")]
        assert [m["id"] for m in shown(bob, "alice")] == sent_ids, "bob's order is not alice's send order"
    # The history command, after both clients and the server stopped, shows the conversation.
    kept = history_texts(homes, "bob", "alice", n)
    assert kept == sent, f"history shows {len(kept)} of {n} messages ({len(set(kept))} distinct)"
    print(
        f"offline: {n} queued, {n} delivered in order once, {len(kept)} in history "
        f"in {time.monotonic() - started:.1f} s"
    )


# --- 2. kill -9 of the server mid-stream ----------------------------------------------------------


@pytest.mark.slow
def test_server_kill9_mid_stream_of_5000_no_gap_no_duplicate(tmp_path: Path, spawn_process: Spawn) -> None:
    n = 5000
    db = tmp_path / "server.db"
    started = time.monotonic()
    first = start_restartable(db)
    second: ServerProcess | None = None
    try:
        port = first.port
        bob = spawn_process("bob", port)
        bob.wait_event("ready")
        alice = spawn_process("alice", port)
        alice.wait_event("ready")
        sent = texts(n)
        alice.send_in_background("bob", sent)
        before = len(bob.count_until("message", n // 4, LONG))
        assert first.kill() == -9
        bob.wait_event("connection", state="reconnecting")
        alice.wait_event("connection", state="reconnecting")
        second = ServerProcess(db, FAST, port=port)
        assert second.wait_listening() == port
        bob.count_until("message", n, LONG)
        alice.count_until("ack", n, LONG)  # every send settled: nothing more can arrive
        reconnects = (len(alice.of_kind("ready")), len(bob.of_kind("ready")))
        assert alice.finish() == 0, alice.stderr_tail()
        assert bob.finish() == 0, bob.stderr_tail()
        messages = shown(bob, "alice")
        got = [m["text"] for m in messages]
        check_exactly_once(messages, sent, f"server killed after bob showed {before}", ordered=False)
        assert min(reconnects) >= 2, f"ready events (alice, bob) = {reconnects}: both should have reconnected"
        out_of_order = sum(1 for a, b in itertools.pairwise(got) if a > b)
        print(
            f"server kill -9 after {before} shown: {len(set(got))}/{n} delivered, "
            f"{len(got) - len(set(got))} twice, {out_of_order} out of order, "
            f"{time.monotonic() - started:.1f} s"
        )
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill()


# --- 3. kill -9 of the recipient's client mid-stream --------------------------------------------


@pytest.mark.slow
def test_recipient_kill9_4_times_during_2000_none_lost_none_shown_twice(
    tmp_path: Path, homes: Path, spawn_process: Spawn
) -> None:
    n = 2000
    kill_after = [300, 150, 250, 100]  # messages shown by each bob process before its kill -9
    started = time.monotonic()
    with server_process(tmp_path / "server.db", FAST) as server:
        bobs = [spawn_process("bob", server.port, "-0")]
        bobs[0].wait_event("ready")
        alice = spawn_process("alice", server.port)
        alice.wait_event("ready")
        sent = texts(n)
        alice.send_in_background("bob", sent)
        for k, count in enumerate(kill_after):
            bobs[-1].count_until("message", count, LONG)
            assert bobs[-1].kill() == -9
            bobs.append(spawn_process("bob", server.port, f"-{k + 1}"))
            bobs[-1].wait_event("ready")
        alice.count_until("ack", n, LONG)  # bob confirmed (or the server queued) every message
        last = bobs[-1]
        earlier = {m["id"] for b in bobs[:-1] for m in shown(b, "alice")}
        last.wait_until(
            lambda events: (
                len(earlier | {e["id"] for e in events if e["event"] == "message"}) >= n - len(kill_after)
            ),
            LONG,
            what="the rest of the stream on the last bob process",
        )
        kept = wait_history(homes, "bob", "alice", n)  # the last backlog is stored, too
        assert alice.finish() == 0, alice.stderr_tail()
        assert last.finish() == 0, last.stderr_tail()
    per_process = [len(shown(b, "alice")) for b in bobs]
    messages = [m for b in bobs for m in shown(b, "alice")]
    got = [m["text"] for m in messages]
    twice = len(got) - len(set(got))
    label = f"bob killed {len(kill_after)} times; shown per process {per_process}"
    assert twice == 0, f"{label}: {twice} shown twice"
    for b in bobs:  # each process on its own shows its part in order
        mine = [m["text"] for m in shown(b, "alice")]
        assert mine == sorted(mine), f"{label}: out of order within one process"
    # Durable and complete: bob's history holds every message exactly once.
    assert sorted(kept) == sent, (
        f"{label}: history holds {len(kept)} ({len(set(kept))} distinct) of {n}; "
        f"missing {sorted(set(sent) - set(kept))[:5]}"
    )
    # A message stored in the instant of a kill -9 (between the commit and the line on stdout)
    # is in history but was never printed: at most one per kill, never more.
    unprinted = sorted(set(sent) - set(got))
    assert len(unprinted) <= len(kill_after), f"{label}: {len(unprinted)} never printed: {unprinted[:5]}"
    print(
        f"recipient kill -9 x{len(kill_after)}: shown per process {per_process}, "
        f"{len(set(got))}/{n} printed once, {len(unprinted)} only in history {unprinted}, "
        f"{len(kept)}/{n} in history, {time.monotonic() - started:.1f} s"
    )


# --- 4. kill -9 of the sender's client with an unacknowledged outbox ------------------------------


@pytest.mark.slow
def test_sender_kill9_with_50_unacked_resent_after_restart_once(tmp_path: Path, spawn_process: Spawn) -> None:
    n = 50
    db = tmp_path / "server.db"
    first = start_restartable(db)
    second: ServerProcess | None = None
    try:
        port = first.port
        bob = spawn_process("bob", port)
        bob.wait_event("ready")
        alice1 = spawn_process("alice", port, "-1")
        alice1.wait_event("ready")
        alice1.command({"cmd": "send", "to": "bob", "text": "before"})  # pins bob's key
        bob.wait_event("message", text="before")
        alice1.wait_event("ack", status="delivered")
        assert first.kill() == -9
        alice1.wait_event("connection", state="reconnecting")
        sent = texts(n, "offline")
        alice1.commands({"cmd": "send", "to": "bob", "text": t} for t in sent)
        alice1.count_until("sent", n + 1, LONG)
        assert len(alice1.of_kind("ack")) == 1, "no ack can come while the server is down"
        assert alice1.kill() == -9
        unacked = {e["id"] for e in alice1.of_kind("sent")} - acked_ids(alice1)
        assert len(unacked) == n, f"{len(unacked)} unacknowledged when alice was killed"

        second = ServerProcess(db, FAST, port=port)
        second.wait_listening()
        alice2 = spawn_process("alice", port, "-2")
        alice2.wait_event("ready")
        bob.count_until("message", n + 1, LONG)
        alice2.count_until("ack", n, LONG)
        assert acked_ids(alice2) == unacked, "alice's second process did not get an ack for each resend"
        assert alice2.finish() == 0, alice2.stderr_tail()
        assert bob.finish() == 0, bob.stderr_tail()
        check_exactly_once(shown(bob, "alice"), ["before", *sent], f"alice killed with {n} unacked")
        print(
            f"sender kill -9: {len(unacked)} unacked resent, bob showed {len(shown(bob, 'alice'))} "
            f"(1 before the crash)"
        )
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill()


@pytest.mark.slow
def test_sender_kill9_mid_stream_of_1000_resends_shown_once(tmp_path: Path, spawn_process: Spawn) -> None:
    n = 1000
    with server_process(tmp_path / "server.db", FAST) as server:
        bob = spawn_process("bob", server.port)
        bob.wait_event("ready")
        alice1 = spawn_process("alice", server.port, "-1")
        alice1.wait_event("ready")
        sent = texts(n)
        alice1.send_in_background("bob", sent)
        bob.count_until("message", n // 3, LONG)
        assert alice1.kill() == -9
        announced = alice1.of_kind("sent")
        unacked = {e["id"] for e in announced} - acked_ids(alice1)
        alice2 = spawn_process("alice", server.port, "-2")  # resends its outbox; the rest is never sent
        alice2.wait_event("ready")
        # Wait for the outbox resends: bob ends with a prefix of the stream, each message once.
        bob.wait_until(
            lambda events: len({e["id"] for e in events if e["event"] == "message"}) >= len(announced),
            LONG,
            what=f"the {len(announced)} messages alice announced",
        )
        # Exit status 0: alice2's outbox was drained.
        assert alice2.finish() == 0, alice2.stderr_tail()
        assert bob.finish() == 0, bob.stderr_tail()
    resent = acked_ids(alice2)
    # Each side may be off by one message caught in the instant of the kill: an ack stored
    # but not printed (one resend fewer), or a message sealed but not announced (one more).
    assert len(unacked - resent) <= 1 and len(resent - unacked) <= 1, (sorted(resent), sorted(unacked))
    messages = shown(bob, "alice")
    last = max(sent.index(m["text"]) for m in messages)
    label = (
        f"alice killed after {len(announced)} sent lines, {len(unacked)} unacked, {len(resent)} resent; "
        f"bob showed {len(messages)} (up to {sent[last]})"
    )
    # A message sealed into the outbox in the instant of the kill has no `sent` line yet:
    # it is still delivered, so bob may hold at most one more than alice announced.
    assert last + 1 - len(announced) in (0, 1), label
    missing = {e["id"] for e in announced} - {m["id"] for m in messages}
    assert not missing, f"{label}: {len(missing)} announced messages never shown"
    check_exactly_once(messages, sent[: last + 1], label, ordered=False)
    print(label)


# --- 5. a recipient that stops reading ------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def round_trips(carol: RawClient, dave: RawClient, n: int, start: int) -> list[float]:
    """``n`` carol -> dave messages, one at a time: send until carol holds dave's ``delivered`` ack."""
    rtts: list[float] = []
    for i in range(start, start + n):
        mid = f"{i:032x}"
        t0 = time.perf_counter()
        await carol.send_frame({"type": "send", "to": "dave", "envelope": envelope("carol", "dave", mid)})
        message = await dave.recv_type("message", 10.0)
        await dave.send_frame({"type": "received", "id": message["envelope"]["id"], "from": "carol"})
        ack = await carol.recv_type("ack", 10.0)
        rtts.append(time.perf_counter() - t0)
        assert (ack["id"], ack["status"]) == (mid, "delivered"), ack
    return rtts


def unread_bytes(client: RawClient) -> int:
    """Bytes waiting in the client's kernel receive buffer (FIONREAD)."""
    sock = client.writer.get_extra_info("socket")
    assert sock is not None
    raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", raw)[0])


def dropped_eve(server: ServerProcess) -> bool:
    return any("dropping" in line and "(eve)" in line for line in list(server.lines))


@pytest.mark.slow
async def test_stalled_reader_300_round_trips_not_slowed_and_its_flood_kept(tmp_path: Path) -> None:
    n_rtt = 300
    flood_connected = 400  # x 4 KiB: more than eve's receive buffer, less than the server's 4 MiB bound
    body = "A" * 4096
    with server_process(tmp_path / "server.db", FAST) as server:
        port = server.port
        clients: dict[str, RawClient] = {}
        try:
            for name in ("carol", "dave", "mallory", "eve"):
                clients[name] = await RawClient.connect(port)
                await clients[name].login(name, identity_key(name))
            carol, dave, mallory, eve = (clients[k] for k in ("carol", "dave", "mallory", "eve"))
            await round_trips(carol, dave, 20, 0)  # warm up
            baseline = await round_trips(carol, dave, n_rtt, 1000)

            # eve stops reading; mallory floods her until eve's receive buffer is full and the
            # rest waits on the server's side, still under the server's outgoing bound (4 MiB).
            sent: list[str] = []

            async def flood_eve(count: int, tag: str) -> None:
                for _ in range(count):
                    mid = f"{0xE000000 + len(sent):032x}"
                    await mallory.send_frame(
                        {
                            "type": "send",
                            "to": "eve",
                            "envelope": {**envelope("mallory", "eve", mid), "ct": body},
                        }
                    )
                    sent.append(mid)
                await mallory.send_frame({"type": "ping", "rid": tag})
                pong = await mallory.recv_type("pong", 30.0)  # the server has routed the whole flood
                assert pong.get("rid") == tag

            await flood_eve(flood_connected, "stalled")
            stuck = len(sent) * len(body) - unread_bytes(eve)
            assert stuck > 0, "eve's socket took the whole flood: the reader is not stalled"
            assert not dropped_eve(server), "eve was dropped before her buffer reached the bound"

            # Measured while eve stays stalled and mallory keeps writing to her.
            stalled: list[float] = []
            for chunk in range(n_rtt // 50):
                stalled += await round_trips(carol, dave, 50, 2000 + 50 * chunk)
                await flood_eve(1, f"trickle-{chunk}")

            # 8 MiB more, past the server's outgoing bound (4 MiB): before issue 13 the server wrote
            # all of it to eve and dropped her connection; now she holds one window (2 MiB) and the
            # rest waits in the store (acked `queued`), so she stays connected.
            await flood_eve(2000, "over")
            assert not dropped_eve(server), "eve was dropped: her window should bound what she is written"
            after_drop = await round_trips(carol, dave, 50, 9000)
            mallory_errors = [f for f in mallory.frames if f["type"] == "error"]

            # eve comes back on a new connection and reads: everything sent to her arrives once.
            await eve.close()
            eve2 = await RawClient.connect(port)
            clients["eve"] = eve2
            await eve2.login("eve", identity_key("eve"))
            got: list[str] = []
            while len(set(got)) < len(sent):
                frame = await eve2.recv_type("message", 30.0)
                got.append(frame["envelope"]["id"])
                await eve2.send_frame({"type": "received", "id": got[-1], "from": "mallory"})
        finally:
            for client in clients.values():
                await client.close()
    p50_base, p99_base = percentile(baseline, 0.5), percentile(baseline, 0.99)
    p50_stall, p99_stall = percentile(stalled, 0.5), percentile(stalled, 0.99)
    report = (
        f"carol->dave round trip over {n_rtt}: p50 {p50_base * 1e3:.2f} ms / p99 {p99_base * 1e3:.2f} ms "
        f"without, p50 {p50_stall * 1e3:.2f} ms / p99 {p99_stall * 1e3:.2f} ms with eve stalled "
        f"({stuck} of {flood_connected} x 4 KiB bytes waiting on the server's side); after 8 MiB more "
        f"for eve p50 {percentile(after_drop, 0.5) * 1e3:.2f} ms; eve got {len(set(got))}/{len(sent)} ({len(sent) * 4 // 1024} MiB) "
        f"({len(got) - len(set(got))} twice) after reconnecting; mallory errors: {len(mallory_errors)}"
    )
    print(report)
    assert not mallory_errors, report
    assert sorted(set(got)) == sorted(sent) and len(got) == len(sent), report
    assert got == sent, report + "; order differs"
    assert p50_stall <= 5 * p50_base + 0.005, report
    assert p99_stall <= 5 * p99_base + 0.05, report
