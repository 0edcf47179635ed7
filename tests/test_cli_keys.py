"""``securechat-client fingerprint`` / ``verify`` / ``history``; permissions and passphrases."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from securechat import crypto
from securechat.client.home import ClientHome
from securechat.client.state import ClientStore
from securechat.names import format_fingerprint
from securechat.records import HistoryEntry
from tests.support.cli import client_command, client_env

BITS = 2048


def run(home: Path, args: Sequence[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*client_command(), *args],
        check=False,
        input="",
        capture_output=True,
        text=True,
        env=client_env(home, **env),
        timeout=30,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """alice with bob pinned and one history line; bob's key is known."""
    with (
        ClientStore.open(tmp_path, "alice", bits=BITS) as alice,
        ClientStore.open(tmp_path, "bob", bits=BITS) as bob,
    ):
        assert bob.identity is not None
        alice.pins.pin("bob", bob.identity.public_pem)
        alice.history.add(HistoryEntry("bob", "out", "1" * 32, 1_700_000_000_000, "hi bob", "delivered"))
        alice.history.add(HistoryEntry("#ops", "in", "2" * 32, 1_700_000_001_000, "hi all", sender="bob"))
        alice.history.add(HistoryEntry("#ops", "out", "3" * 32, 1_700_000_002_000, "hi bob", "delivered 1/1"))
    return tmp_path


def test_fingerprint(home: Path) -> None:
    result = run(home, ["fingerprint", "--name", "alice"])
    assert result.returncode == 0, result.stderr
    expected = format_fingerprint(crypto.fingerprint(ClientHome(home).load_public_key("alice")))
    assert result.stdout.strip() == expected
    # --home on the group works too; a name with capitals is refused with the name to use (issue 14).
    again = subprocess.run(
        [*client_command(), "--home", str(home), "fingerprint", "--name", "ALICE"],
        check=False,
        capture_output=True,
        text=True,
        env=client_env(home / "elsewhere"),
        timeout=30,
    )
    assert again.returncode == 2 and again.stderr.strip().endswith("use --name alice (not 'ALICE')")


def test_verify(home: Path) -> None:
    bob_fp = crypto.fingerprint(ClientHome(home).load_public_key("bob"))
    wrong = one_line_error(run(home, ["verify", "--name", "alice", "bob", "00" * 32]))
    assert "does not match" in wrong
    ok = run(home, ["verify", "--name", "alice", "bob", *format_fingerprint(bob_fp).split()])
    assert ok.returncode == 0, ok.stderr
    assert "verified" in ok.stdout
    with ClientStore.open(home, "alice") as store:
        assert store.pins.info("bob").trust == "verified"
    assert "no key is pinned for 'carol'" in one_line_error(
        run(home, ["verify", "--name", "alice", "carol", "ab" * 32])
    )
    # A typo in the fingerprint is an input error, said before anything is looked up.
    assert "a fingerprint is 64 hex digits" in one_line_error(run(home, ["verify", "--name", "alice", "bob", "ab"]))
    assert "a fingerprint is 64 hex digits" in one_line_error(
        run(home, ["verify", "--name", "alice", "bob", "٠" * 64])
    )


def test_history(home: Path) -> None:
    result = run(home, ["history", "--name", "alice", "bob"])
    assert result.returncode == 0, result.stderr
    assert "alice -> bob: hi bob" in result.stdout and "[delivered]" in result.stdout
    assert "#ops" not in result.stdout


def test_history_of_a_room_names_each_writer(home: Path) -> None:
    # A room's history is a conversation like any other (it was refused: "'#ops' is not a valid name").
    result = run(home, ["history", "--name", "alice", "#OPS"])
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()
    assert rows[0].endswith("bob -> #ops: hi all")
    assert rows[1].endswith("alice -> #ops: hi bob  [delivered 1/1]")
    assert "not a valid room name" in one_line_error(run(home, ["history", "--name", "alice", "#a/b"]))


@pytest.mark.parametrize(("target", "loose"), [("alice/identity.pem", 0o644), ("alice", 0o750)])
@pytest.mark.parametrize(
    "command", [["fingerprint", "--name", "alice"], ["history", "--name", "alice", "bob"]]
)
def test_loose_permissions_refused(home: Path, target: str, loose: int, command: list[str]) -> None:
    os.chmod(home / target, loose)
    line = one_line_error(run(home, command))
    assert "too open" in line and "chmod" in line


def test_wrong_passphrase_one_line(tmp_path: Path) -> None:
    ClientHome(tmp_path).create_identity("alice", "s3cret", bits=BITS)
    line = one_line_error(run(tmp_path, ["history", "--name", "alice", "bob"], SECURECHAT_PASSPHRASE="nope"))
    assert line == "Error: wrong passphrase for the private key"
    chat = run(
        tmp_path, ["--name", "alice", "--json", "--server", "127.0.0.1:9"], SECURECHAT_PASSPHRASE="nope"
    )
    assert one_line_error(chat) == "Error: wrong passphrase for the private key"
    assert chat.stdout == ""
    missing = one_line_error(run(tmp_path, ["history", "--name", "alice", "bob"]))
    assert "SECURECHAT_PASSPHRASE" in missing
    ok = run(tmp_path, ["history", "--name", "alice", "bob"], SECURECHAT_PASSPHRASE="s3cret")
    assert ok.returncode == 0, ok.stderr


def test_first_run_with_passphrase_from_env(tmp_path: Path) -> None:
    result = run(
        tmp_path, ["--name", "dora", "--json", "--server", "127.0.0.1:9"], SECURECHAT_PASSPHRASE="pw"
    )
    assert result.returncode == 0, result.stderr
    assert "Generating a 2048-bit RSA key for dora" in result.stderr
    assert ClientHome(tmp_path).key_is_encrypted("dora")
    assert ClientHome(tmp_path).load_identity("dora", "pw").name == "dora"


def test_bad_usage(tmp_path: Path) -> None:
    assert run(tmp_path, []).returncode == 2  # --name is required to chat
    bad_server = run(tmp_path, ["--name", "alice", "--server", "nowhere"])
    assert bad_server.returncode == 2 and "HOST:PORT" in bad_server.stderr
    # In a list of nodes, every one must be HOST:PORT.
    bad_node = run(tmp_path, ["--name", "alice", "--server", "127.0.0.1:5000,127.0.0.1:x"])
    assert bad_node.returncode == 2 and "port must be a number, got 'x'" in bad_node.stderr
    bad_name = one_line_error(run(tmp_path, ["--name", "no way", "--json"]))
    assert "not a valid name" in bad_name
