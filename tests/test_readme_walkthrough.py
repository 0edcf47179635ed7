"""The README's first conversation, run exactly as written, in four real terminals (issue 14).

The commands are parsed out of README.md (the fenced blocks after a
``<!-- walkthrough: TERMINAL -->`` mark), so an edit of the README that the
program does not follow, or a change of the program that the README does
not follow, fails here. Each terminal is a shell in tmux, in a copy of the
repository; the install really creates a virtual environment and runs
``pip install .``. What the README leaves to the person is done as a person
does it: Enter at the passphrase offer, and a mouse selection of the payload
rows that ``/raw`` shows (tmux's copy mode, which copies the rows as the
terminal drew them, with a line break after each), pasted at decrypt's prompt.

The only differences from a person's machine: ``HOME`` is a temporary
directory (so the default key and server directories are fresh), and the
server's port is a free one, given to the server as ``SECURECHAT_PORT`` and
to the clients as ``SECURECHAT_SERVER``, the environment variables the README
documents for those options.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from securechat.commands import sanitize as safe
from tests.conftest import REPO_ROOT
from tests.support.tmux import TmuxPane, have_tmux

pytestmark = [
    pytest.mark.slow,
    pytest.mark.tmux,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not have_tmux(), reason="tmux is not installed"),
]

README = REPO_ROOT / "README.md"
MARK = re.compile(r"^<!-- walkthrough: (\w+) -->\n```\n(.*?)^```$", re.MULTILINE | re.DOTALL)
PROMPT = r"walkthrough \#$ "  # bash numbers its commands: each prompt says how many ran
PROMPT_SHOWN = re.compile(r"walkthrough (\d+)\$$")  # after "(.venv) " once activated
INSTALL_TIMEOUT = 600.0
STAMP = re.compile(r"^\d\d:\d\d ")


def walkthrough() -> list[tuple[str, list[str]]]:
    """(terminal, lines) for each marked block, in the README's order."""
    steps = [(terminal, body.splitlines()) for terminal, body in MARK.findall(README.read_text("utf-8"))]
    assert steps, "README.md has no walkthrough blocks"
    return steps


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The repository's files (tracked and new, not ignored) in a fresh directory, as after a clone."""
    target = tmp_path / "securechat"
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT, check=False, capture_output=True, text=True,
    )  # fmt: skip
    if listing.returncode != 0:  # an exported tree, not a clone: everything but what a build leaves
        skip = shutil.ignore_patterns(
            ".git", ".venv", "*.egg-info", "build", "__pycache__", ".*_cache", ".hypothesis"
        )
        shutil.copytree(REPO_ROOT, target, ignore=skip)
        return target
    listed = listing.stdout.split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture
def terminals(tmp_path: Path, repo_copy: Path) -> Iterator[dict[str, TmuxPane]]:
    port = free_port()
    env = {
        "HOME": str(tmp_path / "home"),
        "PS1": PROMPT,
        "SECURECHAT_PORT": str(port),
        "SECURECHAT_SERVER": f"127.0.0.1:{port}",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    (tmp_path / "home").mkdir()
    made: dict[str, TmuxPane] = {}
    # The test fixtures' small keys and empty passphrase are unset: the README's first run is a person's.
    shell = ["env", "-u", "SECURECHAT_KEY_BITS", "-u", "SECURECHAT_PASSPHRASE", "-u", "SECURECHAT_HOME",
             "-u", "VIRTUAL_ENV", "bash", "--norc", "--noprofile"]  # fmt: skip
    sizes = {"server": (120, 30), "alice": (100, 30), "bob": (160, 50), "decrypt": (160, 50)}
    try:
        for name, (width, height) in sizes.items():
            pane = TmuxPane(f"readme-{name}", width, height)
            made[name] = pane
            pane.start(shell, env=env, cwd=repo_copy)
            pane.wait_for(lambda screen: at_prompt(screen) is not None)
        yield made
    finally:
        for pane in made.values():
            pane.kill()


def at_prompt(screen: str) -> int | None:
    """The number in the shell's prompt if the last line of the screen is one (the shell waits)."""
    lines = [line for line in screen.splitlines() if line.strip()]
    match = PROMPT_SHOWN.search(lines[-1].strip()) if lines else None
    return int(match.group(1)) if match else None


def run_shell_lines(pane: TmuxPane, lines: list[str], timeout: float) -> str:
    """Type each line at the shell, waiting for the next prompt before the next line; the screen."""
    screen = pane.capture()
    for line in lines:
        before = at_prompt(screen)
        assert before is not None, screen
        pane.type(line)
        screen = pane.wait_for(lambda s, n=before: (at_prompt(s) or 0) > n, timeout)
    return screen


def payload_rows(screen: str, after: str) -> tuple[int, int]:
    """The screen rows of the payload shown under the message line containing ``after``."""
    rows = screen.splitlines()
    start = next(i for i, row in enumerate(rows) if after in row) + 1
    while not rows[start].strip() or after in rows[start]:
        start += 1  # the message line may wrap
    end = start
    while end + 1 < len(rows) and rows[end + 1].strip() and not STAMP.match(rows[end + 1]):
        end += 1
    return start, end


def test_the_readme_walkthrough(terminals: dict[str, TmuxPane], tmp_path: Path) -> None:
    steps = walkthrough()
    assert [terminal for terminal, _ in steps] == ["server", "alice", "bob", "alice", "bob", "decrypt"]
    assert steps[0][1][0].startswith("python3 -m venv .venv") and steps[0][1][1].startswith("pip install .")

    # 1. Install and start the server, exactly as written.
    srv = terminals["server"]
    install, start_server = steps[0][1][:-1], steps[0][1][-1]
    run_shell_lines(srv, install, INSTALL_TIMEOUT)
    srv.type(start_server)
    srv.wait_for("listening on 127.0.0.1:", 60)

    # 2. Two clients; each first run offers a passphrase: Enter for none, as the README says.
    for name, (_terminal, lines) in (("alice", steps[1]), ("bob", steps[2])):
        pane = terminals[name]
        run_shell_lines(pane, lines[:-1], 60)
        pane.type(lines[-1])
        pane.wait_for("Passphrase for the new key (empty for none)", 60)
        pane.keys("Enter")
        screen = pane.wait_for(f"online │ {name} ", 60)
        assert "first session for this name" in screen

    # 3. The conversation, typed line by line in the full-screen clients.
    alice, bob = terminals["alice"], terminals["bob"]
    for line in steps[3][1]:
        alice.type(line)
    alice.wait_for("hello bob  [delivered]", 30)
    bob.wait_for("<alice> hello bob", 30)
    for line in steps[4][1]:
        bob.type(line)
    alice.wait_for("<bob> hi alice", 30)
    screen = bob.wait_for("wrote 1 payload from alice to alice.txt", 30)
    assert "securechat-client --name bob decrypt < alice.txt" in screen
    assert (tmp_path / "securechat" / "alice.txt").exists()

    # 4. bob selects the payload under alice's message, as with the mouse, and pastes it at the prompt.
    first, last = payload_rows(screen, "<alice> hello bob")
    copied = bob.select_rows(first, last)
    assert copied.count("\n") >= 1 or last == first  # rows come out hard-wrapped, as from a terminal
    dec = terminals["decrypt"]
    activate, prompt_decrypt, file_decrypt = steps[5][1]
    run_shell_lines(dec, [activate], 30)
    dec.type(prompt_decrypt)
    dec.wait_for("Paste the payload (line breaks are fine), then press Enter on an empty line:", 30)
    dec.paste(copied + "\n")
    out = dec.wait_for(lambda s: at_prompt(s) is not None, 30)
    assert "from alice to bob" in out and "signed with the key pinned for alice" in out
    text_row = "\n" + " " * safe.TEXT_INDENT + "hello bob\n"  # the peer's text, indented past our own rows
    assert text_row in out, out

    # 5. The file /raw wrote opens the same way.
    out = run_shell_lines(dec, [file_decrypt], 30)
    assert out.count(text_row) == 2, out
    assert "rejected" not in out
