"""End to end in real terminals: two ``securechat-client`` processes in tmux and a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
