"""Keys at rest and trust display (issue #5): what tests/test_keystore.py and
tests/test_cli_keys.py did not already show.

Already covered there: 0600/0700 modes on creation, looser key or directory
refused (library and CLI, one line), wrong passphrase one line non-zero,
SECURECHAT_PASSPHRASE at first run, ``fingerprint`` and ``verify``. Here: the
passphrase offered at first run (empty for none, typed twice), the best
available PKCS#8 encryption on disk, the passphrase asked on start over a real
terminal (and never before the permissions are checked), and verified /
unverified / changed shown by ``--json`` ``whois`` and by the UI's ``/whois``.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path
from typing import Any

import click
import pytest

from securechat import client_cli, crypto
from securechat.client.home import ClientHome
from securechat.names import format_fingerprint
from securechat.records import ContactInfo
from tests.support.cli import client_command, client_env
from tests.support.hostile import HostileServer
from tests.support.jsonclient import JsonClient
from tests.support.rawclient import identity_key
from tests.support.ui_fakes import BOB_FP, BOB_NEW_FP, FakeSession
from tests.support.ui_harness import running_ui

pytestmark = pytest.mark.timeout(60)

BITS = 2048


class Prompts:
    """click.prompt answered from a script; records each prompt's text and options."""

    def __init__(self) -> None:
        self.answers: list[str] = []
        self.asked: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, text: str, **options: Any) -> str:
        self.asked.append((text, options))
        return self.answers.pop(0)

    @property
    def texts(self) -> list[str]:
        return [text for text, _ in self.asked]


@pytest.fixture
def prompts(monkeypatch: pytest.MonkeyPatch) -> Prompts:
    fake = Prompts()
    monkeypatch.setattr(click, "prompt", fake)
    monkeypatch.delenv("SECURECHAT_PASSPHRASE", raising=False)
    monkeypatch.setenv("SECURECHAT_KEY_BITS", str(BITS))
    return fake


def test_first_run_offers_a_passphrase_typed_twice(tmp_path: Path, prompts: Prompts) -> None:
    prompts.answers += ["one", "two", "s3cret", "s3cret"]  # a typo first: asked again
    home = ClientHome(tmp_path)
    store, first = client_cli.open_or_create(home, "alice", interactive=True)
    store.close()
    assert first
    assert prompts.texts == ["Passphrase for the new key (empty for none)", "Repeat the passphrase"] * 2
    assert all(options.get("hide_input") for _, options in prompts.asked)
    key_file = tmp_path / "alice" / "identity.pem"
    assert key_file.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")  # PKCS#8, encrypted
    assert (key_file.stat().st_mode & 0o777, (tmp_path / "alice").stat().st_mode & 0o777) == (0o600, 0o700)
    assert home.key_is_encrypted("alice")
    assert home.load_identity("alice", "s3cret").name == "alice"


def test_first_run_empty_passphrase_means_none(tmp_path: Path, prompts: Prompts) -> None:
    prompts.answers.append("")
    store, _ = client_cli.open_or_create(ClientHome(tmp_path), "alice", interactive=True)
    store.close()
    assert prompts.texts == ["Passphrase for the new key (empty for none)"]
    assert not ClientHome(tmp_path).key_is_encrypted("alice")


def test_environment_passphrase_is_never_prompted_for(
    tmp_path: Path, prompts: Prompts, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECURECHAT_PASSPHRASE", "from-env")
    store, _ = client_cli.open_or_create(ClientHome(tmp_path), "alice", interactive=True)
    store.close()
    again, first = client_cli.open_or_create(ClientHome(tmp_path), "alice", interactive=True)
    again.close()
    assert not first and prompts.asked == []


def _run_on_a_tty(home: Path, args: list[str], typed: str | None, timeout: float = 30.0) -> tuple[int, str]:
    """Run the client with a pseudo-terminal as stdin/stdout/stderr; type ``typed`` at each prompt."""
    master, slave = pty.openpty()
    env = client_env(home)
    proc = subprocess.Popen(
        [*client_command(), *args], stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    answered = 0
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
                if typed is not None and out.count(b"Passphrase for alice") > answered:
                    os.write(master, typed.encode() + b"\n")
                    answered += 1
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=10), out.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


@pytest.fixture
def encrypted_home(tmp_path: Path) -> tuple[Path, str, Path]:
    """alice with a passphrase, a payload from bob for her, and bob's public key file."""
    ClientHome(tmp_path).create_identity("alice", "s3cret", bits=BITS)
    alice_pub = ClientHome(tmp_path).load_public_key("alice")
    envelope = crypto.seal_envelope(identity_key("bob"), alice_pub, "bob", "alice", "for alice only")
    bob_pem = tmp_path / "bob.pem"
    bob_pem.write_text(crypto.public_key_pem(identity_key("bob").public_key()))
    return tmp_path, crypto.encode_payload(envelope), bob_pem


def test_passphrase_asked_on_start_over_a_terminal(encrypted_home: tuple[Path, str, Path]) -> None:
    home, payload, bob_pem = encrypted_home
    args = ["decrypt", "--name", "alice", "--sender-key", str(bob_pem), payload]
    status, out = _run_on_a_tty(home, args, "s3cret")
    assert status == 0, out
    assert "Passphrase for alice" in out and "for alice only" in out
    assert "s3cret" not in out.split("Passphrase for alice", 1)[1]  # hidden input: not echoed


def test_wrong_passphrase_on_a_terminal_is_one_line(encrypted_home: tuple[Path, str, Path]) -> None:
    home, payload, bob_pem = encrypted_home
    status, out = _run_on_a_tty(
        home, ["decrypt", "--name", "alice", "--sender-key", str(bob_pem), payload], "nope"
    )
    assert status != 0
    assert out.count("Passphrase for alice") == 3  # three tries (issue 14), then one line
    after = [line for line in out.rsplit("Passphrase for alice", 1)[1].splitlines() if line.strip(": \r")]
    assert after == ["Error: wrong passphrase for the private key"], out
    assert "for alice only" not in out and "Traceback" not in out


@pytest.mark.parametrize(("target", "mode"), [("alice/identity.pem", 0o640), ("alice", 0o755)])
def test_loose_permissions_refused_before_any_passphrase_is_asked(
    encrypted_home: tuple[Path, str, Path], target: str, mode: int
) -> None:
    home, payload, bob_pem = encrypted_home
    os.chmod(home / target, mode)
    status, out = _run_on_a_tty(
        home, ["decrypt", "--name", "alice", "--sender-key", str(bob_pem), payload], None
    )
    assert status != 0 and "Passphrase" not in out, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and "too open" in lines[0] and "chmod" in lines[0], out


# --- trust shown in --json and in the UI ---------------------------------------------------


async def test_json_whois_shows_unverified_verified_and_changed(tmp_path: Path) -> None:
    srv = HostileServer()
    bob_fp = crypto.fingerprint(identity_key("bob").public_key())
    srv.keys["bob"] = crypto.public_key_pem(identity_key("bob").public_key())
    await srv.start()
    proc = await JsonClient.start("alice", srv.port, tmp_path / "home")
    try:
        await proc.wait_event("ready", timeout=30)
        await proc.command({"cmd": "whois", "name": "bob"})
        assert (await proc.wait_event("contact", name="bob"))["trust"] == "unverified"
        await proc.command({"cmd": "verify", "name": "bob", "fingerprint": "00" * 32})
        assert (await proc.wait_event("verify", name="bob"))["ok"] is False
        await proc.command({"cmd": "verify", "name": "bob", "fingerprint": format_fingerprint(bob_fp)})
        assert (await proc.wait(lambda e: e["event"] == "verify" and e["ok"] is True))["name"] == "bob"
        await proc.command({"cmd": "whois", "name": "bob"})
        verified = await proc.wait(lambda e: e["event"] == "contact" and e["trust"] == "verified")
        assert verified["fingerprint"] == bob_fp and verified["pending_fingerprint"] is None
        srv.keys["bob"] = crypto.public_key_pem(identity_key("mallory").public_key())
        await proc.command({"cmd": "whois", "name": "bob"})
        changed = await proc.wait(lambda e: e["event"] == "contact" and e["trust"] == "changed")
        assert changed["fingerprint"] == bob_fp  # a verified pin is not replaced either
        assert changed["pending_fingerprint"] == crypto.fingerprint(identity_key("mallory").public_key())
        await proc.command({"cmd": "quit"})
        status, stderr = await proc.finish()
        assert status == 0, stderr
    finally:
        proc.kill()
        await proc.proc.wait()
        await srv.close()


@pytest.mark.parametrize(
    ("info", "shown"),
    [
        (ContactInfo("bob", BOB_FP, "verified"), "(verified)"),
        (ContactInfo("bob", BOB_FP, "unverified"), "(unverified)"),
        (ContactInfo("bob", BOB_FP, "changed", BOB_NEW_FP), "(changed)"),
    ],
    ids=["verified", "unverified", "changed"],
)
async def test_ui_whois_shows_the_trust_state(info: ContactInfo, shown: str) -> None:
    async with running_ui(FakeSession(contacts={"bob": info})) as h:
        await h.line("/whois bob")
        await h.shows(shown)
        if info.pending_fingerprint:
            await h.shows("bob now presents another key")
