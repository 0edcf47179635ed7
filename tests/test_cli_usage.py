"""The command lines a newcomer types (issue 14, items 3 and 8): options in either place, clear
usage errors with status 2, help that names the environment and the real paths."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from securechat import crypto
from securechat.cli_common import parse_server
from securechat.client.home import ClientHome
from securechat.client.state import ClientStore
from securechat.records import HistoryEntry
from securechat.server_cli import default_db_path
from tests.support.cli import client_command, client_env
from tests.support.serverproc import server_command, server_process

BITS = 2048


def run(home: Path, args: Sequence[str], stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*client_command(), *args],
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        env=client_env(home, **env),
        timeout=30,
    )


def server(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*server_command(), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bob, with alice pinned and one line of history with her, and a payload from her."""
    root = tmp_path_factory.mktemp("home")
    with ClientStore.open(root, "alice", bits=BITS) as alice, ClientStore.open(root, "bob", bits=BITS) as bob:
        assert alice.identity is not None and bob.identity is not None
        bob.pins.pin("alice", alice.identity.public_pem)
        bob.history.add(HistoryEntry("alice", "in", "2" * 32, 1_700_000_000_000, "hi bob", ""))
        envelope = crypto.seal_envelope(
            alice.identity.private_key, bob.identity.public_key, "alice", "bob", "meet at noon"
        )
    (root / "payload.txt").write_text(crypto.encode_payload(envelope))
    return root


@pytest.mark.parametrize(
    "args",
    [
        ["--name", "bob", "decrypt", "@payload"],
        ["decrypt", "--name", "bob", "@payload"],
        ["--name", "bob", "--home", "@home", "decrypt", "@payload"],
        ["--home", "@home", "decrypt", "--name", "bob", "@payload"],
    ],
)
def test_options_before_or_after_the_subcommand(home: Path, args: list[str]) -> None:
    payload = (home / "payload.txt").read_text()
    spelled = [payload if a == "@payload" else str(home) if a == "@home" else a for a in args]
    result = run(home / "elsewhere" if "@home" in args else home, spelled)
    assert result.returncode == 0, result.stderr
    assert "meet at noon" in result.stdout


@pytest.mark.parametrize(
    "command",
    [["fingerprint"], ["history", "alice"], ["verify", "alice", "00" * 32]],
)
def test_every_subcommand_takes_name_before_it(home: Path, command: list[str]) -> None:
    before = run(home, ["--name", "bob", *command])
    after = run(home, [command[0], "--name", "bob", *command[1:]])
    assert "Missing option" not in before.stderr
    assert (before.returncode, before.stdout) == (after.returncode, after.stdout), before.stderr


def test_conflicting_or_unused_options_before_a_subcommand_are_refused(home: Path) -> None:
    twice = run(home, ["--name", "alice", "fingerprint", "--name", "bob"])
    assert twice.returncode == 2
    assert twice.stderr.strip() == "Error: --name is given twice (alice before 'fingerprint', bob after it)"
    unused = run(home, ["--name", "bob", "--json", "fingerprint"])
    assert unused.returncode == 2
    assert unused.stderr.strip() == "Error: --json is for the chat; 'fingerprint' does not use it"
    missing = run(home, ["fingerprint"])
    assert missing.returncode == 2 and "--name is required" in missing.stderr


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_history_limit_must_be_positive(home: Path, limit: str) -> None:
    result = run(home, ["--name", "bob", "history", "alice", "--limit", limit])
    assert result.returncode == 2
    assert "no history" not in result.stderr
    assert f"Invalid value for '--limit': {limit} is not in the range x>=1" in result.stderr


def test_plain_and_json_together_are_refused(tmp_path: Path) -> None:
    result = run(tmp_path, ["--name", "alice", "--plain", "--json"])
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: --json and --plain are two different front ends: choose one"
    assert not (tmp_path / "alice").exists()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (":::", "an IPv6 address goes in brackets"),
        ("::1", "an IPv6 address goes in brackets"),
        ("http://127.0.0.1:5000", "not a URL"),
        ("127.0.0.1", "with no port"),
        (":5000", "with no host"),
        ("[zz]:5000", "is not an IPv6 address"),
        ("host:port", "the port must be a number, got 'port'"),
        ("host:0", "the port must be 1..65535"),
        ("bad host:5000", "is not a host name or address"),
    ],
)
def test_malformed_server_addresses_are_refused_at_start(tmp_path: Path, value: str, says: str) -> None:
    result = run(tmp_path, ["--name", "alice", "--plain", "--server", value])
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "for example 127.0.0.1:5000" in result.stderr
    assert not (tmp_path / "alice").exists()  # refused before any key was made


def test_good_server_addresses() -> None:
    assert parse_server("127.0.0.1:5000") == ("127.0.0.1", 5000)
    assert parse_server("[::1]:5000") == ("::1", 5000)
    assert parse_server(" chat.example.org:443 ") == ("chat.example.org", 443)


def test_usage_mistakes_exit_2_and_failures_exit_1(home: Path) -> None:
    bad_name = run(home, ["--name", "no way", "fingerprint"])
    bad_fingerprint = run(home, ["--name", "bob", "verify", "alice", "xyz"])
    unknown_option = run(home, ["--name", "bob", "--nope"])
    assert [r.returncode for r in (bad_name, bad_fingerprint, unknown_option)] == [2, 2, 2]
    assert bad_name.stderr.strip().splitlines() == [
        (
            "Error: 'no way' is not a valid name (a-z, 0-9, '_' and '-', starting with a letter or digit, "
            "1 to 32 characters)"
        )
    ]
    no_identity = run(home, ["--name", "carol", "fingerprint"])
    mismatch = run(home, ["--name", "bob", "verify", "alice", "00" * 32])
    assert [no_identity.returncode, mismatch.returncode] == [1, 1]
    assert server(["--port", "70000"]).returncode == 2
    assert server(["--queue-limit", "0"]).returncode == 2
    assert server(["--nope"]).returncode == 2


def test_server_help_names_the_environment_and_the_real_database_path() -> None:
    shown = server(["--help"])
    assert shown.returncode == 0
    flat = " ".join(shown.stdout.split())
    for variable in ("SECURECHAT_HOST", "SECURECHAT_PORT", "SECURECHAT_DB", "SECURECHAT_LOG_LEVEL"):
        assert variable in flat
    assert f"[default: {default_db_path()}]" in flat
    assert "<app dir>" not in flat
    assert "--log-level [debug|info|warning|error]" in flat and "default: info]" in flat


def test_server_version_and_log_of_the_database(tmp_path: Path) -> None:
    version = server(["--version"])
    assert version.returncode == 0 and version.stdout.startswith("securechat-server, version ")
    db = tmp_path / "data" / "chat.db"
    with server_process(db, ["--log-level", "INFO"]) as proc:
        assert any(f"state in the SQLite database {db}; TLS identity " in line for line in proc.lines), proc.lines
        proc.stop()


def test_client_help_summaries_are_whole_sentences() -> None:
    shown = subprocess.run(
        [*client_command(), "--help"], check=False, capture_output=True, text=True, timeout=30
    )
    commands = shown.stdout.split("Commands:", 1)[1].strip().splitlines()
    assert len(commands) == 5  # decrypt, fingerprint, history, trust-server, verify
    for line in commands:
        assert line.rstrip().endswith(".") and "..." not in line, line
    assert "SECURECHAT_HOME" in shown.stdout and "SECURECHAT_SERVER" in shown.stdout


def on_terminal(
    home: Path, args: Sequence[str], answers: list[tuple[str, str]], timeout: float = 30.0
) -> tuple[int, str]:
    """Run the client on a pseudo-terminal, typing each answer once its prompt has appeared."""
    primary, secondary = os.openpty()
    proc = subprocess.Popen(
        ["setsid", "--ctty", *client_command(), *args],
        stdin=secondary, stdout=secondary, stderr=secondary, env=client_env(home),
    )  # fmt: skip
    os.close(secondary)
    screen, answered = "", 0
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None or select.select([primary], [], [], 0)[0]:
            assert time.monotonic() < deadline, f"still running:\n{screen}"
            if select.select([primary], [], [], 0.2)[0]:
                try:
                    screen += os.read(primary, 65536).decode("utf-8", "replace")
                except OSError:  # EIO: the child closed the terminal
                    break
            if answered < len(answers) and screen.count(answers[answered][0]) > sum(
                1 for prompt, _ in answers[:answered] if prompt == answers[answered][0]
            ):
                os.write(primary, (answers[answered][1] + "\n").encode())
                answered += 1
        return proc.wait(timeout), screen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)


@pytest.mark.skipif(
    not hasattr(os, "openpty") or shutil.which("setsid") is None, reason="needs a pty and setsid"
)
def test_a_wrong_passphrase_can_be_typed_again(tmp_path: Path) -> None:
    ClientHome(tmp_path).create_identity("alice", "s3cret", bits=BITS)
    asked = "Passphrase for alice"
    code, screen = on_terminal(
        tmp_path, ["--name", "alice", "history", "bob"], [(asked, "nope"), (asked, "s3cret")]
    )
    assert "Wrong passphrase; try again (2 left)." in screen
    assert code == 0 and "no history with bob" in screen
    code, screen = on_terminal(
        tmp_path, ["--name", "alice", "history", "bob"], [(asked, "a"), (asked, "b"), (asked, "c")]
    )
    assert code == 1 and screen.count(asked) == 3
    assert screen.rstrip().endswith("Error: wrong passphrase for the private key")


def test_the_test_run_starts_without_a_warning() -> None:
    """Issue 14, item 8: the run used to start with pytest-asyncio's loop-scope deprecation warning."""
    import sys

    from tests.conftest import REPO_ROOT

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_names.py",
        ],
        cwd=REPO_ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "warning" not in (run.stdout + run.stderr).lower(), run.stdout + run.stderr
