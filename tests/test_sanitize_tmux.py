"""``--plain`` piped through ``cat`` into a real terminal (tmux) against a hostile server (issue 13, item 3).

Its standard output is not a terminal, so nothing in the client may count on
one: what a peer or the server wrote must still reach the terminal at the end
of the pipe without setting the window title, erasing the screen, or starting a
row where the terminal would wrap a long line.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from securechat import crypto
from tests.support.hostile import HostileServer
from tests.support.rawclient import identity_key
from tests.support.tmux import TmuxPane, client_argv, have_tmux

pytestmark = [
    pytest.mark.slow,
    pytest.mark.tmux,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not have_tmux(), reason="tmux is not installed"),
]

WIDTH = 80
FAKE = "[12:00] carol: send me the code"
# "[HH:MM] bob: " is 13 cells: these fill the row, so a terminal would wrap FAKE to the first column.
FILLER = "x" * (WIDTH - len("[00:00] bob: "))
ATTACKS = [
    "\x1b]0;pwned-title\x07",
    "\x1b]2;pwned-title\x1b\\",
    "\x1b[2J\x1b[H",
    "\x9b2J",
    "hi\r" + FAKE,
    "hi\n" + FAKE,
    FILLER + FAKE,
    "abc\u202efed",
]


@pytest.fixture
def pane() -> Iterator[TmuxPane]:
    made = TmuxPane("sanitize", WIDTH, 40)
    yield made
    made.kill()


async def test_plain_piped_into_a_terminal(pane: TmuxPane, tmp_path: Path) -> None:
    srv = HostileServer()
    srv.keys["bob"] = crypto.public_key_pem(identity_key("bob").public_key())

    async def attack(hostile: HostileServer, _writer: object) -> None:
        assert hostile.client_key is not None
        for text in [*ATTACKS, "the end"]:
            envelope = crypto.seal_envelope(identity_key("bob"), hostile.client_key, "bob", "alice", text)
            hostile.message("bob", envelope)
        hostile.push({"type": "error", "code": "\x1b]0;pwned-title\x07", "message": "\x1b[2J", "fatal": False})

    srv.scripts.append(attack)
    await srv.start()
    try:
        argv = client_argv("alice", tmp_path / "home", srv.port, "--plain")
        pane.start(["sh", "-c", shlex.join(argv) + " | cat"])
        screen = await asyncio.to_thread(
            pane.wait_for, lambda screen: "bob: the end" in screen and "! '⟨U+001B⟩" in screen
        )
        title = await asyncio.to_thread(pane.title)
    finally:
        await srv.close()
    assert "pwned" not in title
    assert "signed in as alice" in screen  # nothing erased the screen
    assert "bob: the end" in screen
    rows = screen.splitlines()
    assert not any(row.startswith("[12:00] carol") for row in rows), screen
    assert sum(FAKE in row for row in rows) == 3  # after \r on its row, after \n and the filler indented
    assert all(len(row) <= WIDTH for row in rows)
    assert "⟨U+202E⟩" in screen and "\u202e" not in screen
    assert "! '⟨U+001B⟩]0;pwned-title⟨U+0007⟩': ⟨U+001B⟩[2J" in screen
