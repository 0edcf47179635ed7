"""The full-screen chat: wires a :class:`SessionAPI` to the prompt_toolkit application.

The session and the UI share one asyncio loop: :func:`run_chat_ui` runs
``session.run()`` as a task beside ``Application.run_async()``.  Typed lines
go through the command layer (:mod:`securechat.commands`: the grammar and
the :class:`~securechat.commands.Executor` that ``--plain`` and ``--json``
use too); this module only renders its outcomes and the session's events
into :class:`~securechat.ui.state.ChatState`, and owns what only a full
screen has (the pane, the mouse).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prompt_toolkit.application import Application
from prompt_toolkit.filters import Condition

from securechat.commands import Command, Executor, Hint, parse_line
from securechat.commands.grammar import FULL_SCREEN, Clear, Mouse, Quit, Raw, Say
from securechat.commands.outcomes import Local, Opened, Outcome, Sent, Switched, Trusted, Verified
from securechat.commands.wording import SESSION_OVER, describe, describe_error, pretty_fingerprint, raw_lines
from securechat.errors import ServerErrorReply, ServerRefused
from securechat.events import MessageSent, Ready, SessionAPI, SessionEvent
from securechat.ui.keybindings import build_key_bindings
from securechat.ui.layout import MessagePane, build_input, build_layout
from securechat.ui.render import pane_rows, plain, status_bar
from securechat.ui.state import ChatState
from securechat.ui.style import build_style, color_depth, no_color

CLOSE_TIMEOUT = 5.0
# The reconnect countdown in the status bar needs a redraw now and then.
REFRESH_INTERVAL = 1.0
UNWRAPPED = 1 << 20


class ChatUI:
    """One chat screen bound to one session."""

    def __init__(
        self,
        session: SessionAPI,
        *,
        first_run: bool = False,
        monochrome: bool | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.session = session
        self.executor = Executor(session, FULL_SCREEN)
        self.state = ChatState(
            own_name=_safe(lambda: session.name),
            fingerprint=_safe(lambda: session.fingerprint),
            first_run=first_run,
            clock=clock,
            plaintext=session.plaintext,
        )
        self.mouse = True
        self._mouse_before_raw = True
        self.exit_code = 0
        self.accepted = 0  # lines taken from the input line (tests wait on it)
        self.commands: asyncio.Queue[Command | Hint] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.pane = MessagePane(self.state)
        self.input = build_input(self.state, self.submit, self.known_names)
        mono = no_color() if monochrome is None else monochrome
        self.app: Application[int] = Application(
            layout=build_layout(self.state, self.pane, self.input),
            key_bindings=build_key_bindings(self),
            style=build_style(mono),
            color_depth=color_depth(mono),
            full_screen=True,
            mouse_support=Condition(lambda: self.mouse),
            refresh_interval=REFRESH_INTERVAL,
        )
        # The first-run welcome waits for the server's (Ready): a taken name is never welcomed.
        self.state.info(
            f"securechat: you are {self.state.own_name or '?'} "
            f"({pretty_fingerprint(self.state.fingerprint)}). /help lists the commands."
        )

    def known_names(self) -> list[str]:
        return self.state.known_names(self.executor.online)

    # --- session → screen ---------------------------------------------------------

    def on_event(self, event: SessionEvent) -> None:
        """Session listener: fold the event in and redraw; never raises."""
        try:
            seen = self.executor.observe(event)
            for outcome in seen.outcomes:
                self.render(outcome)
            if seen.show:
                self.state.apply(event)
            if isinstance(event, Ready):
                self._spawn(self.executor.refresh())
            if isinstance(event, MessageSent) and event.to == self.state.current:
                self.pane.follow()  # typing means the user is at the bottom
        except Exception as exc:  # noqa: BLE001 - a hostile peer must not take the screen down
            self.state.warn(f"could not show an event: {describe_error(exc)}")
        self.app.invalidate()

    def render(self, outcome: Outcome) -> None:
        """Show what a command (or the executor, about an event) produced."""
        st = self.state
        match outcome:
            case Switched(name, history):
                st.switch(name)
                self.pane.follow()
                st.add_history(name, history)
            case Opened(name):
                st.switch(name)
            case Sent(msg_id, to, text):
                st.note_sent(msg_id, to, text)
            case Trusted(_before, after) if after.trust != "changed":
                st.banners.pop(after.name, None)
            case Verified(name, True, _pinned):
                st.banners.pop(name, None)
            case Local(command):
                self._local(command)
        for level, text in describe(outcome):
            st.say(level, text)

    # --- keystrokes → session -----------------------------------------------------

    def submit(self, line: str) -> None:
        """Handle one submitted input line: queue it for :meth:`_command_worker`."""
        self.accepted += 1
        command = parse_line(line)
        if command is not None:
            self.commands.put_nowait(command)

    async def _command_worker(self) -> None:
        # One worker, so commands run (and messages leave) in the order they were typed.
        while True:
            command = await self.commands.get()
            try:
                if isinstance(command, Hint):
                    self.state.hint(command.text)
                    continue
                if isinstance(command, Say):
                    self.pane.follow()
                for outcome in await self.executor.execute(command):
                    self.render(outcome)
            except Exception as exc:  # noqa: BLE001 - any failure is a hint, never a traceback
                self.state.hint(describe_error(exc))
            finally:
                self.commands.task_done()
                self.app.invalidate()

    def _local(self, command: Raw | Clear | Mouse | Quit) -> None:
        st = self.state
        match command:
            case Raw():
                self._toggle_raw()
            case Clear():
                st.clear()
                self.pane.follow()
            case Mouse():
                self.mouse = not self.mouse
                st.info(
                    "mouse wheel scrolls the pane"
                    if self.mouse
                    else "mouse off: the terminal selects text; PageUp/PageDown scroll"
                )
            case Quit():
                self.quit()

    def _toggle_raw(self) -> None:
        st = self.state
        on = st.toggle_raw()
        if on:
            # Mouse capture would stop the terminal from selecting the payloads.
            self._mouse_before_raw, self.mouse = self.mouse, False
        else:
            self.mouse = self._mouse_before_raw or self.mouse
        for text in raw_lines(on):
            st.info(text)
        if on and self._mouse_before_raw:
            st.info("mouse wheel scrolling is off meanwhile (/mouse turns it back on)")

    def quit(self, code: int | None = None) -> None:
        if code is not None:
            self.exit_code = code
        if self.app.is_running and not self.app.future.done():  # type: ignore[union-attr]
            self.app.exit(result=self.exit_code)

    # --- for tests and screenshots -------------------------------------------------

    def pane_text(self) -> str:
        """Every line of the current window as plain text, unwrapped."""
        return "\n".join(plain(row) for row in pane_rows(self.state, UNWRAPPED))

    def status_text(self) -> str:
        """The status bar as drawn, fitted to the output's width."""
        return plain(status_bar(self.state, self.pane.scrolled, self.app.output.get_size().columns))

    # --- tasks ------------------------------------------------------------------------

    def _spawn(self, outcomes: Awaitable[list[Outcome]]) -> None:
        task = asyncio.ensure_future(self._render_later(outcomes))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _render_later(self, outcomes: Awaitable[list[Outcome]]) -> None:
        for outcome in await outcomes:
            self.render(outcome)
        self.app.invalidate()

    def _session_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        self.state.connection = "offline"
        self.state.retry_at = None
        if isinstance(exc, ServerErrorReply) and exc.code != "replaced":
            self.quit(1)  # refused at sign-in: the command line says why, after the screen is gone
        elif isinstance(exc, ServerErrorReply):
            self.exit_code = 1
            self.state.warn(SESSION_OVER)  # the error line above said what happened
        elif exc is not None:
            self.exit_code = 1
            why = "the server was refused (above)" if isinstance(exc, ServerRefused) else describe_error(exc)
            self.state.warn(f"the session ended: {why}; /quit to leave")
        else:
            self.state.info("the session ended; /quit to leave")
        self.app.invalidate()

    async def run(self) -> int:
        """Run the session and the screen until the user quits; the exit code."""
        self.session.add_listener(self.on_event)
        session_task = asyncio.ensure_future(self.session.run())
        session_task.add_done_callback(self._session_ended)
        worker = asyncio.ensure_future(self._command_worker())
        loop = asyncio.get_running_loop()
        # SIGINT from outside (kill -INT; Ctrl-C is a key here) and SIGTERM end like /quit,
        # so the terminal is restored: prompt_toolkit's own SIGINT handler ignores it.
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.quit)
        try:
            result = await self.app.run_async(handle_sigint=False)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            worker.cancel()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(self.session.close(), CLOSE_TIMEOUT)
            if not session_task.done():
                session_task.cancel()
            with contextlib.suppress(Exception, asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.gather(session_task, return_exceptions=True), CLOSE_TIMEOUT)
        return result if isinstance(result, int) else self.exit_code


def _safe(get: Callable[[], str]) -> str:
    try:
        return get()
    except Exception:  # noqa: BLE001 - the status bar can show "?" until Ready
        return ""


async def run_chat_ui(session: SessionAPI, *, first_run: bool = False) -> int:
    """The full-screen chat for ``session``; returns the process exit code."""
    return await ChatUI(session, first_run=first_run).run()
