"""Regenerate docs/screenshots/*.txt: real clients in tmux against a real server.

    python -m tests.support.make_screenshots [OUT_DIR]

Every screen is a real ``securechat-client`` at 80x24: nothing is mocked.  The
rejected message comes from a raw protocol client that tampers with a
ciphertext after signing; the key change from the server being replaced by
one with an empty database, where "bob" registers again with a new key.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from securechat import crypto
from securechat.encoding import b64decode, b64encode
from tests.support.rawclient import RawClient
from tests.support.serverproc import server_process
from tests.support.tmux import TmuxPane, client_argv

REPO = Path(__file__).resolve().parents[2]


def save(out: Path, name: str, screen: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(screen.rstrip("\n") + "\n", encoding="utf-8")
    print(f"wrote {out / name}")


def conversation(tmp: Path, out: Path) -> None:
    with server_process(tmp / "conv.db") as server:
        alice, bob = TmuxPane("alice"), TmuxPane("bob")
        try:
            alice.start(client_argv("alice", tmp / "conv-alice", server.port))
            bob.start(client_argv("bob", tmp / "conv-bob", server.port))
            alice.wait_for("online │ alice")
            bob.wait_for("online │ bob")
            alice.type("/clear")
            alice.type("/to bob")
            alice.type("hi bob, are we still on for the review at 3?")
            bob.wait_for("<alice> hi bob")
            bob.type("yes! I'll bring the threat model notes")
            alice.wait_for("<bob> yes!")
            alice.type("great. can you read me your fingerprint first?")
            bob.wait_for("fingerprint first?")
            bob.type("/fingerprint")
            alice.type("/whois bob")
            alice.wait_for("(unverified)")
            alice.type("/users")
            alice.wait_for("registered")
            screen = alice.wait_for("[delivered]")
            save(out, "conversation.txt", screen)
        finally:
            alice.kill()
            bob.kill()


async def _send_tampered(port: int) -> None:
    key = crypto.generate_private_key(2048)
    mallory = await RawClient.connect(port)
    try:
        await mallory.login("mallory", key)
        await mallory.send_frame({"type": "lookup", "name": "alice"})
        alice_key = crypto.load_public_key_pem((await mallory.recv_type("key", 10))["pubkey"])
        env = crypto.seal_envelope(key, alice_key, "mallory", "alice", "this text must never be shown")
        ct = bytearray(b64decode(env["ct"]))
        ct[-1] ^= 0x01
        env["ct"] = b64encode(bytes(ct))
        await mallory.send_frame({"type": "send", "to": "alice", "envelope": env})
        await mallory.recv_type("ack", 10)
    finally:
        await mallory.close()


def rejected(tmp: Path, out: Path) -> None:
    with server_process(tmp / "rej.db") as server:
        alice = TmuxPane("alice")
        try:
            alice.start(client_argv("alice", tmp / "rej-alice", server.port))
            alice.wait_for("online │ alice")
            alice.type("/clear")
            asyncio.run(_send_tampered(server.port))
            screen = alice.wait_for("rejected a message from mallory")
            assert "must never be shown" not in screen
            save(out, "rejected-message.txt", screen)
            alice.type("/raw")
            screen = alice.wait_for(lambda s: "payloads under messages" in s)
            save(out, "raw-payload.txt", screen)
        finally:
            alice.kill()


def key_change(tmp: Path, out: Path) -> None:
    alice, bob, bob2 = TmuxPane("alice"), TmuxPane("bob"), TmuxPane("bob2")
    try:
        with server_process(tmp / "kc1.db") as server:
            port = server.port
            alice.start(client_argv("alice", tmp / "kc-alice", port))
            bob.start(client_argv("bob", tmp / "kc-bob", port))
            alice.wait_for("online │ alice")
            bob.wait_for("online │ bob")
            alice.type("/clear")
            alice.type("/to bob")
            alice.type("see you tomorrow")
            bob.wait_for("<alice> see you tomorrow")
            alice.wait_for("[delivered]")
            bob.kill()
            server.stop()
            alice.wait_for("reconnecting")
        # A new server with an empty database on the same port: "bob" registers
        # again, with a key alice has never seen. The same TLS identity (kept beside
        # the database), or alice would refuse the server before any key is shown.
        for part in ("tls-cert.pem", "tls-key.pem"):
            shutil.copy2(tmp / f"kc1.{part}", tmp / f"kc2.{part}")
        with server_process(tmp / "kc2.db", ["--port", str(port)]):
            alice.wait_for("online │ alice", timeout=60)
            bob2.start(client_argv("bob", tmp / "kc-bob-new", port))
            bob2.wait_for("online │ bob")
            bob2.type("/to alice")
            bob2.type("hey, it's me on my new laptop")
            alice.wait_for("THE KEY OF BOB CHANGED", timeout=30)
            alice.type("ok?")
            screen = alice.wait_for('not sent to bob ("ok?")')
            save(out, "key-change-warning.txt", screen)
    finally:
        for pane in (alice, bob, bob2):
            pane.kill()


def room(tmp: Path, out: Path) -> None:
    """A room of three from start to end: created, members added, each talks, delivery per member."""
    with server_process(tmp / "room.db") as server:
        panes = {name: TmuxPane(name) for name in ("alice", "bob", "carol")}
        alice, bob, carol = panes.values()
        try:
            for name, pane in panes.items():
                pane.start(client_argv(name, tmp / f"room-{name}", server.port))
                pane.wait_for(f"online │ {name}")
            alice.type("/clear")
            alice.type("/create #ops")
            alice.wait_for("alice created #ops")
            alice.type("/add #ops bob")
            alice.type("/add #ops carol")
            for member in (bob, carol):
                member.wait_for("#ops:")  # the status bar: something happened in #ops
                member.type("/to #ops")
                member.wait_for("alice added carol to #ops")
            alice.type("standup in 5: the relay release is blocked on the TLS review")
            bob.wait_for("relay release")
            carol.wait_for("relay release")
            bob.type("I can review it now")
            carol.wait_for("I can review it now")
            carol.type("thanks bob, notes are in the tracker")
            alice.wait_for("notes are in the tracker")
            alice.type("/members")
            screen = alice.wait_for(lambda s: "delivered 2/2" in s and "as verified here" in s)
            save(out, "room.txt", screen)
        finally:
            for pane in panes.values():
                pane.kill()


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else REPO / "docs" / "screenshots"
    with tempfile.TemporaryDirectory(prefix="securechat-shots-") as tmp_name:
        tmp = Path(tmp_name)
        conversation(tmp, out)
        rejected(tmp, out)
        key_change(tmp, out)
        room(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
