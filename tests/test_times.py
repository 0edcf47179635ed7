"""Times from outside (issue 13, items 7 and 15).

Every time that comes from the network or a payload (a message's signed ``ts``,
the server's ``server_ts``, the ``ts`` kept in the history) is range-checked
before it is shown: the wire allows up to 2**53 - 1 ms (year 287,396), far past
what a calendar can print. A message is dated by its signed time, and the
server's time follows in parentheses when the two are more than ten minutes
apart: a replayed old envelope (accepted again after a lost state file) shows
its old date, not the moment the server handed it over.
"""

from __future__ import annotations

import asyncio
import datetime
import subprocess
import time
from pathlib import Path

import pytest

from securechat import crypto
from securechat.client.state import ClientStore
from securechat.clock import now_ms
from securechat.commands import times
from securechat.events import MessageReceived
from securechat.lineui import LineChat, format_event
from securechat.records import HistoryEntry
from securechat.ui.render import pane_rows, plain
from securechat.ui.state import ChatState
from tests.support.cli import client_command, client_env
from tests.support.hostile import HostileServer
from tests.support.plainclient import PlainClient
from tests.support.rawclient import identity_key
from tests.support.ui_fakes import FakeSession

pytestmark = pytest.mark.timeout(90)

MAX_WIRE_TS = 2**53 - 1
YEAR_10000 = 253_402_300_800_000
TWO_YEARS_MS = 730 * 86_400_000
HOSTILE_TIMES = [0, 1, YEAR_10000 - 1, YEAR_10000, 10**15, MAX_WIRE_TS]


def _date(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M")


@pytest.mark.parametrize("ts", HOSTILE_TIMES)
@pytest.mark.parametrize("server_ts", [None, 0, MAX_WIRE_TS])
def test_every_wire_time_has_a_label(ts: int, server_ts: int | None) -> None:
    now = now_ms()
    label = times.message_clock(ts, server_ts, now)
    assert label.startswith(times.clock(ts, now))
    if ts >= YEAR_10000:
        assert label.startswith(times.OUT_OF_RANGE)
    assert ("(server: " in label) == (server_ts is not None and abs(ts - server_ts) > times.FAR_FROM_SERVER_MS)
    assert times.utc_clock(ts) == times.OUT_OF_RANGE or times.utc_clock(ts).endswith(" UTC")


def test_today_is_a_time_and_another_day_a_date() -> None:
    now = now_ms()
    assert times.clock(now, now) == time.strftime("%H:%M", time.localtime(now / 1000))
    old = now - TWO_YEARS_MS
    assert times.clock(old, now) == _date(old)
    assert times.message_clock(now - 5 * 60_000, now, now) == times.clock(now - 5 * 60_000, now)


def _received(ts: int, server_ts: int | None, text: str = "hi") -> MessageReceived:
    return MessageReceived("bob", f"{ts % 10**32:032x}", ts, text, "P", server_ts)


def test_plain_shows_the_signed_time_and_marks_it() -> None:
    now = now_ms()
    replayed = format_event(_received(now - TWO_YEARS_MS, now, "old news"))
    assert replayed == [f"[{_date(now - TWO_YEARS_MS)} (server: {times.clock(now, now)})] bob: old news"]
    absurd = format_event(_received(MAX_WIRE_TS, now, "from the far future"))
    assert absurd == [f"[{times.OUT_OF_RANGE} (server: {times.clock(now, now)})] bob: from the far future"]


async def test_plain_history_with_absurd_times_is_shown() -> None:
    entries = [HistoryEntry("bob", "in", f"{i:032x}", ts, f"text {i}") for i, ts in enumerate(HOSTILE_TIMES)]
    out: list[str] = []
    chat = LineChat(FakeSession(histories={"bob": entries}), out.append)
    assert await chat.handle("/to bob")
    assert [line.split("] ", 1)[1] for line in out[:-1]] == [f"bob: text {i}" for i in range(len(entries))]
    assert out[-1] == "* talking to bob"


def test_full_screen_shows_the_signed_time_and_marks_it() -> None:
    now = now_ms()
    state = ChatState(own_name="alice", clock=lambda: now / 1000)
    state.switch("bob")
    state.apply(_received(now - TWO_YEARS_MS, now, "old news"))
    state.apply(_received(MAX_WIRE_TS, MAX_WIRE_TS, "far future"))
    state.add_history("bob", [HistoryEntry("bob", "in", "e" * 32, MAX_WIRE_TS, "kept", server_ts=now)])
    rows = [plain(row) for row in pane_rows(state, 200)]
    assert f"{_date(now - TWO_YEARS_MS)} (server: {times.clock(now, now)}) <bob> old news" in rows
    assert f"{times.OUT_OF_RANGE} <bob> far future" in rows
    assert f"{times.OUT_OF_RANGE} (server: {times.clock(now, now)}) <bob> kept" in rows


def _run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*client_command(), *args], capture_output=True, text=True, env=client_env(home), timeout=30, check=False
    )


def _sealed(client_key: crypto.PublicKey, text: str, ts: int) -> dict[str, object]:
    return crypto.seal_envelope(identity_key("bob"), client_key, "bob", "alice", text, ts=ts)


async def test_real_client_dates_a_replayed_envelope_by_its_signed_time(tmp_path: Path) -> None:
    """A real ``--plain`` process, then the ``history`` subcommand over its home."""
    srv = HostileServer()
    srv.keys["bob"] = crypto.public_key_pem(identity_key("bob").public_key())
    now = now_ms()

    async def push(hostile: HostileServer, _writer: object) -> None:
        assert hostile.client_key is not None
        for text, ts in (("replayed", now - TWO_YEARS_MS), ("far future", MAX_WIRE_TS)):
            envelope = _sealed(hostile.client_key, text, ts)
            hostile.push({"type": "message", "from": "bob", "server_ts": now, "envelope": envelope})

    srv.scripts.append(push)
    await srv.start()
    home = tmp_path / "home"
    client = await PlainClient.start("alice", srv.port, home)
    try:
        server_clock = times.clock(now, now_ms())
        await client.wait_line(lambda line: line.endswith("bob: replayed"))
        await client.wait_line(lambda line: line.endswith("bob: far future"))
        await client.type("/to bob")  # the history again, from the store
        await client.wait_line(lambda line: line == "* talking to bob")
        status, stderr = await client.finish()
        assert status == 0 and "Traceback" not in stderr, stderr
        shown = [line for line in client.lines if line.endswith(("bob: replayed", "bob: far future"))]
        assert shown == 2 * [
            f"[{_date(now - TWO_YEARS_MS)} (server: {server_clock})] bob: replayed",
            f"[{times.OUT_OF_RANGE} (server: {server_clock})] bob: far future",
        ]
    finally:
        client.kill()
        await srv.close()
    result = await asyncio.to_thread(_run, home, "history", "--name", "alice", "bob")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(times.utc_clock(now - TWO_YEARS_MS) + f" (server: {times.utc_clock(now)})")
    assert lines[1].startswith(f"{times.OUT_OF_RANGE} (server: {times.utc_clock(now)})")
    assert [line.split("alice: ", 1)[1] for line in lines] == ["replayed", "far future"]


def test_decrypt_a_payload_from_the_far_future(tmp_path: Path) -> None:
    with ClientStore.open(tmp_path, "alice", bits=2048) as alice:
        alice.pins.pin("bob", crypto.public_key_pem(identity_key("bob").public_key()))
        assert alice.identity is not None
        envelope = _sealed(alice.identity.public_key, "from the year 287396", MAX_WIRE_TS)
    result = _run(tmp_path, "decrypt", "--name", "alice", crypto.encode_payload(envelope))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert f"at {times.OUT_OF_RANGE} " in result.stdout
    assert "from the year 287396" in result.stdout
