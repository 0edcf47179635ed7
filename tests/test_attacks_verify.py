"""Non-ASCII fingerprints at every way in to ``verify`` (issue 13, item 13).

A fingerprint that holds anything but ASCII hex digits and separators (Arabic
or fullwidth digits, a Cyrillic letter among Latin ones, a zero-width space, a
bidi override, emoji) is an input error everywhere: the ``verify``
subcommand, ``--json``'s ``verify``, ``/verify`` in ``--plain`` and in the
full-screen UI, and ``SessionAPI.verify`` itself. Never a ``TypeError``
(``hmac.compare_digest`` refuses non-ASCII strings), never "verified".
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from securechat import crypto
from securechat.client import ClientSession
from securechat.client.state import ClientStore
from securechat.commands import Hint, parse_line
from securechat.errors import InvalidFingerprint
from securechat.lineui import LineChat
from tests.support.cli import client_command, client_env
from tests.support.hostile import HostileServer
from tests.support.jsonclient import JsonClient
from tests.support.rawclient import identity_key
from tests.support.ui_fakes import BOB_FP, FakeSession
from tests.support.ui_harness import running_ui

pytestmark = pytest.mark.timeout(90)

BOB_REAL_FP = crypto.fingerprint(identity_key("bob").public_key())
HINT = "a fingerprint is 64 hex digits"


def _hostile_fingerprints(real: str) -> dict[str, str]:
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in real)
    return {
        "arabic-indic digits": "\u0660" * 64,
        "fullwidth hex of the real one": fullwidth,
        "mathematical bold digits": "\U0001d7ce" * 64,
        "cyrillic a in the real one": real.replace("a", "\u0430", 1) if "a" in real else "\u0430" + real[1:],
        "zero-width space in the real one": real[:32] + "\u200b" + real[32:],
        "bidi override in the real one": "\u202e" + real,
        "byte order mark before the real one": "\ufeff" + real,
        "latin e with acute": "\u00e9" * 64,
        "emoji": "\U0001f600" * 64,
    }


HOSTILE = _hostile_fingerprints(BOB_REAL_FP)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """alice's home with bob's real key pinned (unverified)."""
    with ClientStore.open(tmp_path, "alice", bits=2048) as alice:
        alice.pins.pin("bob", crypto.public_key_pem(identity_key("bob").public_key()))
    return tmp_path


def _trust(home: Path) -> str | None:
    with ClientStore.open(home, "alice") as store:
        return store.pins.info("bob").trust


@pytest.mark.parametrize("typed", HOSTILE.values(), ids=HOSTILE.keys())
def test_the_subcommand_says_it_is_not_a_fingerprint(home: Path, typed: str) -> None:
    result = subprocess.run(
        [*client_command(), "verify", "--name", "alice", "bob", typed],
        check=False,
        capture_output=True,
        text=True,
        env=client_env(home),
        timeout=30,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    assert HINT in lines[0]
    assert _trust(home) == "unverified"


def test_the_session_api_raises_an_input_error(home: Path) -> None:
    with ClientStore.open(home, "alice") as store:
        session = ClientSession(store)
        for typed in HOSTILE.values():
            with pytest.raises(InvalidFingerprint):
                session.verify("bob", typed)
        assert session.contact("bob").trust == "unverified"


async def test_json_verify_answers_invalid_fingerprint_and_goes_on(tmp_path: Path) -> None:
    srv = HostileServer()
    srv.keys["bob"] = crypto.public_key_pem(identity_key("bob").public_key())
    await srv.start()
    proc = await JsonClient.start("alice", srv.port, tmp_path / "home")
    try:
        await proc.wait_event("ready", timeout=30)
        await proc.command({"cmd": "whois", "name": "bob"})
        await proc.wait_event("contact", name="bob", trust="unverified")
        for typed in HOSTILE.values():
            await proc.command({"cmd": "verify", "name": "bob", "fingerprint": typed})
        await proc.command({"cmd": "whois", "name": "bob"})  # answered after every verify above
        await proc.wait(lambda _e: sum(e["event"] == "contact" for e in proc.events) == 2)
        errors = [e for e in proc.events if e["event"] == "error"]
        assert len(errors) == len(HOSTILE)
        assert {(e["code"], e.get("cmd")) for e in errors} == {("invalid_fingerprint", "verify")}
        assert all(HINT in e["message"] for e in errors)
        assert not [e for e in proc.events if e["event"] == "verify"]
        await proc.command({"cmd": "verify", "name": "bob", "fingerprint": BOB_REAL_FP})
        assert (await proc.wait_event("verify", name="bob"))["ok"] is True
        await proc.command({"cmd": "quit"})
        status, stderr = await proc.finish()
        assert status == 0 and "Traceback" not in stderr, stderr
    finally:
        proc.kill()
        await proc.proc.wait()
        await srv.close()


async def test_plain_verify_is_a_hint(home: Path) -> None:
    for typed in HOSTILE.values():
        assert isinstance(parse_line(f"/verify bob {typed}"), Hint)
    out: list[str] = []
    chat = LineChat(FakeSession(), out.append)
    for typed in HOSTILE.values():
        await chat.handle(f"/verify bob {typed}")
        assert out[-1].startswith(f"! {HINT}"), out[-1]
    assert not any("internal error" in line or "verified" in line for line in out)


async def test_full_screen_verify_is_a_hint() -> None:
    fake = FakeSession()
    async with running_ui(fake) as h:
        for typed in list(HOSTILE.values())[:3]:
            await h.line(f"/verify bob {typed}")
        await h.shows(HINT)
        pane = h.ui.pane_text()
        assert pane.count(HINT) == 3 and "internal error" not in pane
        assert not [call for call in fake.calls if call[0] == "verify"]
        assert BOB_FP not in pane
