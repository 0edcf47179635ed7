"""The ``securechat-server`` command as a real subprocess."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from securechat.server_cli import GC_YOUNG, _tune_collector
from tests.support.rawclient import RawClient, envelope, identity_key, msg_id
from tests.support.redisproc import RedisProcess
from tests.support.serverproc import server_command, server_process

pytestmark = pytest.mark.timeout(60)


async def login_and_ping(port: int, name: str = "alice") -> None:
    c = await RawClient.connect(port)
    await c.login(name, identity_key(name))
    await c.send_frame({"type": "ping"})
    assert await c.recv() == {"type": "pong"}
    await c.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_starts_serves_and_stops_cleanly(tmp_path: Path, sig: int) -> None:
    with server_process(tmp_path / "s.db") as proc:
        assert proc.port != 0
        await login_and_ping(proc.port)
        code = await asyncio.to_thread(proc.stop, sig)
        assert code == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "event loop:" in proc.stderr
        assert "server stopped" in proc.stderr


async def test_options_come_from_the_environment(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "dir" / "env.db"
    env = {"SECURECHAT_PORT": "0", "SECURECHAT_DB": str(db), "SECURECHAT_HANDSHAKE_TIMEOUT": "0.3"}
    with server_process(None, env=env, port=None) as proc:
        assert db.exists()  # its directories were created
        await login_and_ping(proc.port)
        c = await RawClient.connect(proc.port)
        frame = await c.recv()  # nothing sent: the 0.3 s handshake timeout from the environment
        assert frame["code"] == "timeout"
        await c.close()
        assert await asyncio.to_thread(proc.stop) == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "70000"], ["--rate", "-1"], ["--burst", "zero"], ["--log-level", "LOUD"], ["--max-frame", "0"],
        ["--shed-after", "-1"], ["--shed-after", "inf"], ["--shed-after", "nan"],
    ],
)
def test_bad_option_value_is_a_one_line_error(tmp_path: Path, args: list[str]) -> None:
    result = subprocess.run(
        [*server_command(), "--db", str(tmp_path / "s.db"), *args],
        check=False, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert "Traceback" not in result.stderr


def test_bad_option_value_from_the_environment(tmp_path: Path) -> None:
    result = subprocess.run(
        [*server_command(), "--db", str(tmp_path / "s.db")],
        check=False, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        env={**os.environ, "SECURECHAT_QUEUE_LIMIT": "-5"},
    )
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1


def test_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with server_process(tmp_path / "a.db") as proc:
        result = subprocess.run(
            [*server_command(), "--db", str(tmp_path / "b.db"), "--port", str(proc.port)],
            check=False, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "Traceback" not in result.stderr


async def test_queued_message_survives_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with server_process(db) as proc:
        await login_and_ping(proc.port, "bob")
        a = await RawClient.connect(proc.port)
        await a.login("alice", identity_key("alice"))
        await a.send_frame({"type": "send", "to": "bob", "envelope": envelope("alice", "bob", msg_id(1))})
        assert (await a.recv_type("ack"))["status"] == "queued"
        proc.kill()
        await a.close()
    with server_process(db) as proc:
        b = await RawClient.connect(proc.port)
        assert (await b.login("bob", identity_key("bob")))["new"] is False
        assert (await b.recv_type("message"))["envelope"]["id"] == msg_id(1)
        await b.close()
        assert await asyncio.to_thread(proc.stop) == 0


async def test_first_run_under_umask_022_keeps_the_database_private(tmp_path: Path) -> None:
    """Issue 13 item 11: a first run under the usual umask 022 must not leave the queue readable by others."""
    folder = tmp_path / "state" / "securechat"
    db = folder / "server.db"
    with server_process(db, umask=0o022) as proc:
        await login_and_ping(proc.port, "alice")  # a registration: the WAL and its index exist now
        modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in (folder, *folder.iterdir())}
        assert {"server.db", "server.db-wal", "server.db-shm"} <= modes.keys(), modes
        tls = {"server.tls-cert.pem": 0o600, "server.tls-key.pem": 0o600}  # the identity made on first start
        assert modes == {"securechat": 0o700, "server.db": 0o600, "server.db-wal": 0o600, "server.db-shm": 0o600, **tls}
        assert await asyncio.to_thread(proc.stop) == 0


async def test_an_existing_database_with_loose_modes_is_made_private(tmp_path: Path) -> None:
    """Files left 0644 by an earlier run (or a copy) are tightened before anything is written to them."""
    db = tmp_path / "server.db"
    with server_process(db) as proc:
        await login_and_ping(proc.port, "alice")
        proc.kill()  # the WAL and its index stay behind
    for path in tmp_path.glob("server.db*"):
        path.chmod(0o644)
    with server_process(db, umask=0o022) as proc:
        await login_and_ping(proc.port, "bob")
        loose = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in tmp_path.glob("server.db*")
                 if stat.S_IMODE(p.stat().st_mode) & 0o077}
        assert loose == {}
        assert await asyncio.to_thread(proc.stop) == 0


# --- --redis -------------------------------------------------------------------------------


def run_server(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*server_command(), "--port", "0", *args],
        check=False, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_redis_without_the_extra_says_what_to_install(tmp_path: Path) -> None:
    # A Python that cannot import hiredis, as without `pip install 'securechat[redis]'`.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "hiredis.py").write_text("raise ImportError('No module named hiredis')\n")
    path = os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")])
    result = run_server(["--redis", "redis://127.0.0.1:1/0"], env={"PYTHONPATH": path})
    line = one_error_line(result)
    assert "pip install 'securechat[redis]'" in line, line


def test_one_node_runs_without_the_redis_extra(tmp_path: Path) -> None:
    """`pip install securechat` (no [redis]): the server on SQLite starts and serves rooms without
    importing redis-py or hiredis (the README walkthrough installs it that way)."""
    shadow = tmp_path / "shadow"
    (shadow / "redis").mkdir(parents=True)
    for module in (shadow / "hiredis.py", shadow / "redis" / "__init__.py"):
        module.write_text("raise ImportError('not installed: the [redis] extra is not')\n")
    path = os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")])
    with server_process(tmp_path / "s.db", env={"PYTHONPATH": path}) as srv:
        assert srv.port > 0
        assert not any("Traceback" in line for line in srv.lines), srv.lines


def test_unreachable_redis_is_a_one_line_error(tmp_path: Path) -> None:
    line = one_error_line(run_server(["--redis", "redis://127.0.0.1:1/0"]))
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in line, line


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--redis", "http://127.0.0.1:1"], "must start with redis://"),
        (["--redis", "redis://127.0.0.1:1/x"], "the database after the host must be a number"),
        (["--redis", "redis://127.0.0.1:1/0", "--db", "x.db"], "exclude each other"),
        (["--redis-replicas", "1"], "--redis-replicas needs --redis"),
    ],
)
def test_bad_redis_options_are_one_line_errors(tmp_path: Path, args: list[str], says: str) -> None:
    assert says in one_error_line(run_server(args))


async def test_nodes_share_redis_from_the_environment(tmp_path: Path, redis_server: RedisProcess) -> None:
    """Two nodes configured by SECURECHAT_REDIS: a name registered on one is known on the other."""
    env = {"SECURECHAT_REDIS": redis_server.url, "SECURECHAT_PORT": "0"}
    with server_process(None, env=env, port=None) as a, server_process(None, env=env, port=None) as b:
        assert "routes through Redis at" in a.stderr
        # What it really uses: Redis, and no SQLite file it would never open (it logged one before).
        assert f"state in Redis at redis://127.0.0.1:{redis_server.port}/0 (no SQLite database)" in a.stderr, a.stderr
        assert "SQLite database /" not in a.stderr and ".db" not in a.stderr, a.stderr
        await login_and_ping(a.port, "carol")
        c = await RawClient.connect(b.port)
        welcome = await c.login("carol", identity_key("carol"))
        assert welcome["new"] is False
        await c.close()
        assert await asyncio.to_thread(a.stop) == 0
        assert await asyncio.to_thread(b.stop) == 0


def test_the_collector_is_set_for_a_long_running_node() -> None:
    """What start-up made is frozen out of later collections, and the youngest generation waits for GC_YOUNG
    new objects (docs/performance.md, round 8: the collector cost a sender's node some 7 us a message)."""
    before = gc.get_threshold()
    gc.unfreeze()
    try:
        _tune_collector()
        assert gc.get_threshold() == (GC_YOUNG, *before[1:])
        assert GC_YOUNG > before[0]
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
