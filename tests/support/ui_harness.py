"""The real full-screen application, headless: a pipe for keys, a dummy terminal for output."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prompt_toolkit.application import create_app_session
from prompt_toolkit.data_structures import Size
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output import DummyOutput

from securechat.ui import ChatUI
from tests.support.ui_fakes import FakeSession

ENTER = "\r"
PAGE_UP = "\x1b[5~"
PAGE_DOWN = "\x1b[6~"
UP = "\x1b[A"
TAB = "\t"
CTRL_C = "\x03"
CTRL_D = "\x04"
ALT_ENTER = "\x1b\r"


def paste(text: str) -> str:
    """``text`` as a terminal pastes it (bracketed): line breaks stay in the input line."""
    return f"\x1b[200~{text}\x1b[201~"


class TerminalOutput(DummyOutput):
    """A dummy output with a real terminal's size (80x24 unless told)."""

    def __init__(self, rows: int = 24, columns: int = 80) -> None:
        self.size = Size(rows=rows, columns=columns)

    def get_size(self) -> Size:
        return self.size


async def wait_until(cond: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.01)


@dataclass
class Harness:
    ui: ChatUI
    fake: FakeSession
    inp: PipeInput
    task: asyncio.Task[int]

    def type(self, text: str) -> None:
        self.inp.send_text(text)

    async def line(self, text: str) -> None:
        """Type ``text`` (pasted if it has line breaks) and Enter; wait until the command has run."""
        before = self.ui.accepted
        self.inp.send_text((paste(text) if "\n" in text else text) + ENTER)
        await wait_until(lambda: self.ui.accepted > before and not self.ui.input.text, what=text)
        await asyncio.wait_for(self.ui.commands.join(), 5)

    async def shows(self, needle: str, timeout: float = 5.0) -> None:
        await wait_until(lambda: needle in self.ui.pane_text(), timeout, f"{needle!r} in the pane")

    async def quit(self) -> int:
        self.type(CTRL_C)
        return await asyncio.wait_for(self.task, 5)


@asynccontextmanager
async def running_ui(
    fake: FakeSession | None = None,
    *,
    first_run: bool = False,
    size: tuple[int, int] = (24, 80),
    monochrome: bool = False,
) -> AsyncIterator[Harness]:
    fake = fake or FakeSession()
    with create_pipe_input() as inp, create_app_session(input=inp, output=TerminalOutput(*size)):
        ui = ChatUI(fake, first_run=first_run, monochrome=monochrome)
        task = asyncio.ensure_future(ui.run())
        # Running, or already over: a session refused at once (name_taken) may end the screen
        # between two looks (the refusal test failed once when it did).
        await wait_until(lambda: fake.running.is_set() and (ui.app.is_running or task.done()), what="app running")
        h = Harness(ui, fake, inp, task)
        try:
            yield h
        finally:
            if not task.done():
                ui.quit()
            await asyncio.wait_for(task, 5)
