"""Real terminals for end-to-end UI tests: one tmux server per pane, polled, never slept on."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tests.support.cli import client_command

DEFAULT_TIMEOUT = 20.0
POLL = 0.05
EXIT_MARK = "EXIT="

# Fast keys for tests (still protocol-valid) and no passphrase prompt.
CLIENT_ENV = {"SECURECHAT_KEY_BITS": "2048", "SECURECHAT_PASSPHRASE": "", "TERM": "xterm-256color"}


def have_tmux() -> bool:
    return shutil.which("tmux") is not None




class TmuxPane:
    """A command running in its own tmux server (``-L``), read with capture-pane."""

    def __init__(self, label: str, width: int = 80, height: int = 24) -> None:
        self.socket = f"sc-{label}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.width, self.height = width, height
        self.started = False

    def _tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            check=check,
            capture_output=True,
            text=True,
            timeout=10,
        )

    def start(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        """Run ``argv``; when it exits the pane shows ``EXIT=<status>`` and stays open."""
        assigns = [f"{k}={v}" for k, v in {**CLIENT_ENV, **(env or {})}.items()]
        inner = shlex.join(["env", *assigns, *argv])
        shell = f"{inner}; echo {EXIT_MARK}$?; sleep 3600"
        self._tmux(
            "new-session", "-d", "-x", str(self.width), "-y", str(self.height),
            *(["-c", str(cwd)] if cwd else []), "sh", "-c", shell,
        )  # fmt: skip
        self.started = True

    def keys(self, *keys: str) -> None:
        """tmux key names: Enter, C-c, PageUp, ..."""
        self._tmux("send-keys", "-t", "0", *keys)

    def type(self, text: str, enter: bool = True) -> None:
        self._tmux("send-keys", "-t", "0", "-l", text)
        if enter:
            self.keys("Enter")

    def paste(self, text: str) -> None:
        """Paste ``text`` as a terminal would (bracketed, when the app asked for it)."""
        self._tmux("set-buffer", "-b", "sc", text)
        self._tmux("paste-buffer", "-p", "-d", "-b", "sc", "-t", "0")

    def select_rows(self, first: int, last: int) -> str:
        """Select screen rows ``first..last`` as a person does with the mouse, and copy them.

        tmux's copy mode copies what the terminal shows: rows the application
        drew one by one come out with a line break after each, as from a real
        terminal. Returns the copied text.
        """
        self._tmux("copy-mode", "-t", "0")
        self._tmux("send-keys", "-t", "0", "-X", "top-line")
        if first:
            self._tmux("send-keys", "-t", "0", "-X", "-N", str(first), "cursor-down")
        self._tmux("send-keys", "-t", "0", "-X", "start-of-line")
        self._tmux("send-keys", "-t", "0", "-X", "begin-selection")
        if last > first:
            self._tmux("send-keys", "-t", "0", "-X", "-N", str(last - first), "cursor-down")
        self._tmux("send-keys", "-t", "0", "-X", "end-of-line")
        self._tmux("send-keys", "-t", "0", "-X", "copy-selection-and-cancel")
        return self._tmux("show-buffer").stdout

    def capture(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "0").stdout

    def title(self) -> str:
        """The pane's title, which an application sets with an OSC 0 or 2 sequence."""
        return self._tmux("display-message", "-p", "-t", "0", "#{pane_title}").stdout.strip()

    def resize(self, width: int, height: int) -> None:
        self._tmux("resize-window", "-t", "0", "-x", str(width), "-y", str(height))

    def wait_for(self, cond: str | Callable[[str], bool], timeout: float = DEFAULT_TIMEOUT) -> str:
        """Poll the screen until it contains ``cond`` (or ``cond(screen)``); the screen."""
        check = (lambda screen: cond in screen) if isinstance(cond, str) else cond
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.capture()
            if check(screen):
                return screen
            time.sleep(POLL)
        raise AssertionError(f"timed out after {timeout}s waiting for {cond!r}; the screen:\n{screen}")

    def kill(self) -> None:
        if self.started:
            self._tmux("kill-server", check=False)
            self.started = False


def client_argv(name: str, home: Path, port: int, *extra: str) -> list[str]:
    return [*client_command(), "--name", name, "--home", str(home), "--server", f"127.0.0.1:{port}", *extra]
