"""End to end in real terminals: two ``securechat-client`` processes in tmux and a real server."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from securechat.commands.wording import OFFLINE_USERS
from tests.support.cli import client_command
from tests.support.serverproc import ServerProcess, server_process
from tests.support.tmux import EXIT_MARK, TmuxPane, client_argv, have_tmux

pytestmark = [
    pytest.mark.slow,
    pytest.mark.tmux,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not have_tmux(), reason="tmux is not installed"),
]


@pytest.fixture
def panes() -> Iterator[dict[str, TmuxPane]]:
    made: dict[str, TmuxPane] = {}
    yield made
    for pane in made.values():
        pane.kill()


def open_client(
    panes: dict[str, TmuxPane], name: str, tmp_path: Path, port: int, width: int = 80, height: int = 24
) -> TmuxPane:
    pane = TmuxPane(name, width, height)
    panes[name] = pane
    pane.start(client_argv(name, tmp_path / f"home-{name}", port))
    pane.wait_for(f"online │ {name} ")
    return pane


def test_two_clients_chat_through_a_real_server(
    server_proc: ServerProcess, panes: dict[str, TmuxPane], tmp_path: Path
) -> None:
    alice = open_client(panes, "alice", tmp_path, server_proc.port)
    bob = open_client(panes, "bob", tmp_path, server_proc.port, width=120, height=40)
    first = alice.capture()
    assert "first session for this name" in first  # first run: fingerprint and how to compare

    alice.type("/to bob")
    alice.wait_for("[bob]")
    alice.type("hello bob, it's alice")
    bob.wait_for("<alice> hello bob, it's alice")
    alice.wait_for("hello bob, it's alice  [delivered]")
    assert "→ alice" in bob.capture()

    bob.type("hi alice!")
    alice.wait_for("<bob> hi alice!")

    # A multi-line paste is one message.
    alice.paste("line one\nline two")
    alice.wait_for("[bob] line one")
    alice.keys("Enter")
    screen = bob.wait_for("<alice> line one")
    assert "line two" in screen.split("<alice> line one", 1)[1].splitlines()[1]

    # Resizing redraws at the new width.
    alice.resize(60, 20)
    alice.wait_for(lambda s: max(len(line) for line in s.splitlines()) <= 60 and "online │ alice" in s)

    # Ctrl-C quits cleanly; /quit too.
    bob.keys("C-c")
    bob.wait_for(f"{EXIT_MARK}0")
    alice.type("/quit")
    alice.wait_for(f"{EXIT_MARK}0")


def test_offline_typing_is_sent_after_reconnect(
    server_proc: ServerProcess, panes: dict[str, TmuxPane], tmp_path: Path
) -> None:
    alice = open_client(panes, "alice", tmp_path, server_proc.port)
    bob = open_client(panes, "bob", tmp_path, server_proc.port)
    alice.type("/to bob")
    alice.type("before the outage")
    bob.wait_for("<alice> before the outage")

    port = server_proc.port
    server_proc.stop()
    alice.wait_for("reconnecting")
    alice.type("typed while offline")
    alice.wait_for("typed while offline")

    with server_process(tmp_path / "server.db", ["--port", str(port)]) as again:
        assert again.port == port
        alice.wait_for("online │ alice", timeout=60)
        bob.wait_for("<alice> typed while offline", timeout=60)
        alice.wait_for("typed while offline  [delivered]", timeout=30)


# --- issue 14: what a newcomer sees in the full screen -----------------------------------------


def test_the_pane_says_why_it_cannot_connect_and_answers_while_offline(
    panes: dict[str, TmuxPane], tmp_path: Path
) -> None:
    with server_process(tmp_path / "server.db") as srv:
        port = srv.port
        srv.stop()  # a port nothing listens on now
    alice = TmuxPane("alice", 160, 30)
    panes["alice"] = alice
    alice.start(client_argv("alice", tmp_path / "home", port))
    refused = (
        f"cannot connect to 127.0.0.1:{port}: connection refused (is the server running, and on this port?)"
    )
    alice.wait_for(refused)
    # Told once per cause: a wait of 5 s or more is the fourth attempt at least (capped jittered
    # backoff from 0.5 s: 0.25-0.5, 0.5-1, 1-2, 2-4, 4-8 s, ...), and the line is still there once.
    alice.wait_for(
        lambda s: (m := re.search(r"reconnecting in (\d+)s", s)) is not None and int(m[1]) >= 5, 60
    )
    assert alice.capture().count("connection refused") == 1
    alice.type("/users")
    alice.wait_for(OFFLINE_USERS)
    alice.type("/whois bob")
    alice.wait_for("no key pinned yet")
    with server_process(tmp_path / "server.db", ["--port", str(port)]) as again:
        alice.wait_for("connected to the server again", 60)
        alice.wait_for("online │ alice")
        again.stop()
        alice.wait_for("the server closed the connection; retrying until it answers", 30)
    alice.type("/quit")
    alice.wait_for(f"{EXIT_MARK}0")


def test_quitting_says_how_many_messages_stay_in_the_outbox(
    server_proc: ServerProcess, panes: dict[str, TmuxPane], tmp_path: Path
) -> None:
    alice = open_client(panes, "alice", tmp_path, server_proc.port)
    open_client(panes, "bob", tmp_path, server_proc.port)
    alice.type("/to bob")
    alice.type("first")
    alice.wait_for("first  [delivered]")
    server_proc.stop()
    alice.wait_for("the server closed the connection")
    alice.type("still there?")
    alice.type("hello?")
    alice.wait_for("hello?  [sending…]")
    alice.keys("C-c")
    screen = alice.wait_for(f"{EXIT_MARK}0")
    said = (
        "2 messages are not confirmed by the server yet: kept in the outbox, sent the next time "
        "you start securechat-client --name alice"
    )
    assert "".join(said.split()) in "".join(screen.split())  # the terminal wrapped it


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_from_outside_restores_the_terminal(
    server_proc: ServerProcess, panes: dict[str, TmuxPane], tmp_path: Path, sig: signal.Signals
) -> None:
    alice = open_client(panes, "alice", tmp_path, server_proc.port)
    pid = int((tmp_path / "home-alice" / "alice" / "lock").read_text())  # the lock names its holder
    os.kill(pid, sig)
    screen = alice.wait_for(EXIT_MARK, 15)
    assert f"{EXIT_MARK}0" in screen
    assert "online │" not in screen  # the full screen is gone: the shell's screen is back


def test_a_room_payload_from_raw_opens_in_decrypt(
    server_proc: ServerProcess, panes: dict[str, TmuxPane], tmp_path: Path
) -> None:
    """Issue 10: /raw shows a room message's payload; a person selects its rows with the mouse (tmux's copy
    mode) and pastes them at `securechat-client decrypt --name bob`'s prompt: it names the room and the sender."""
    from tests.test_readme_walkthrough import payload_rows

    alice = open_client(panes, "alice", tmp_path, server_proc.port, width=160, height=40)
    bob = open_client(panes, "bob", tmp_path, server_proc.port, width=160, height=50)
    alice.type("/create #ops")
    alice.wait_for("alice created #ops (invite)")
    alice.type("/add #ops bob")
    alice.wait_for("alice added bob to #ops")
    bob.wait_for("#ops")  # the status bar counts the room's unread change
    bob.type("/to #ops")
    bob.wait_for("alice added bob to #ops")
    alice.type("/to #ops")
    alice.type("the room's secret plan")
    bob.wait_for("<alice> the room's secret plan")
    bob.type("/raw")
    screen = bob.wait_for(lambda s: "<alice> the room's secret plan" in s and "eyJ" in s)
    first, last = payload_rows(screen, "<alice> the room's secret plan")
    copied = bob.select_rows(first, last)
    assert copied.count("\n") >= 1, copied  # rows come out hard-wrapped, as from a terminal

    dec = TmuxPane("decrypt", 160, 40)
    panes["decrypt"] = dec
    dec.start([*client_command(), "decrypt", "--name", "bob", "--home", str(tmp_path / "home-bob")])
    dec.wait_for("Paste the payload (line breaks are fine), then press Enter on an empty line:")
    dec.paste(copied + "\n")
    out = dec.wait_for(f"{EXIT_MARK}0")
    flat = " ".join(out.split())  # decrypt cuts its rows at the terminal's width
    assert "from alice in #ops (sent under seq 1 of its log: 2 members)" in flat, out
    assert "signed with the key pinned for alice" in flat, out
    assert "\n    the room's secret plan\n" in out, out
    for pane in (alice, bob):
        pane.type("/quit")
        pane.wait_for(f"{EXIT_MARK}0")
