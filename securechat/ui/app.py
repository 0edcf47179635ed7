"""The full-screen chat: wires a :class:`SessionAPI` to the prompt_toolkit application.

The session and the UI share one asyncio loop: :func:`run_chat_ui` runs
``session.run()`` as a task beside ``Application.run_async()``.  The UI never
touches the network or keys itself; every failure of a session call becomes a
one-line hint in the pane.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prompt_toolkit.application import Application
from prompt_toolkit.filters import Condition

from securechat.errors import KeyChanged, SecurechatError
from securechat.events import MessageSent, Ready, SessionAPI, SessionEvent
from securechat.ui import commands as cmd
from securechat.ui.keybindings import build_key_bindings
from securechat.ui.layout import MessagePane, build_input, build_layout
from securechat.ui.render import pane_rows, plain, status_bar
from securechat.ui.state import STATUS_WINDOW, ChatState, fingerprint_rows, pretty_fingerprint
from securechat.ui.style import build_style, color_depth, no_color

CLOSE_TIMEOUT = 5.0
# The reconnect countdown in the status bar needs a redraw now and then.
REFRESH_INTERVAL = 1.0
UNWRAPPED = 1 << 20


def describe_error(exc: BaseException) -> str:
    """One line for the pane; never a traceback."""
    if isinstance(exc, KeyChanged):
        return f"the key of {exc.name} changed; compare it (/whois {exc.name}), then /trust {exc.name}"
    if isinstance(exc, SecurechatError):
        # Server-supplied text may hold line breaks; a hint stays one line.
        return " ".join(str(exc).split()) or type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"internal error: {type(exc).__name__}{': ' + text if text else ''}"


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
        self.state = ChatState(
            own_name=_safe(lambda: session.name),
            fingerprint=_safe(lambda: session.fingerprint),
            first_run=first_run,
            clock=clock,
        )
        self.mouse = True
        self._mouse_before_raw = True
        self.exit_code = 0
        self._outgoing: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.pane = MessagePane(self.state)
        self.input = build_input(self.state, self.submit)
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
        if first_run and self.state.fingerprint:
            self.state.intro_shown = True
            self.state.show_intro()
        else:
            self.state.info(
                f"securechat: you are {self.state.own_name or '?'} "
                f"({pretty_fingerprint(self.state.fingerprint)}). /help lists the commands."
            )

    # --- session → screen ---------------------------------------------------------

    def on_event(self, event: SessionEvent) -> None:
        """Session listener: fold the event in and redraw; never raises."""
        try:
            self.state.apply(event)
            if isinstance(event, Ready):
                self._spawn(self.session.list_users())  # names for tab completion
            if isinstance(event, MessageSent) and event.to == self.state.current:
                self.pane.follow()  # typing means the user is at the bottom
        except Exception as exc:  # noqa: BLE001 - a hostile peer must not take the screen down
            self.state.warn(f"could not show an event: {describe_error(exc)}")
        self.app.invalidate()

    # --- keystrokes → session -----------------------------------------------------

    def submit(self, line: str) -> None:
        """Handle one submitted input line."""
        try:
            self._dispatch(cmd.parse(line))
        except Exception as exc:  # noqa: BLE001 - any failure is a hint, never a traceback
            self.state.hint(describe_error(exc))
        self.app.invalidate()

    def _dispatch(self, command: cmd.Command | cmd.Hint | None) -> None:
        st = self.state
        match command:
            case None:
                return
            case cmd.Hint(text):
                st.hint(text)
            case cmd.Say(text):
                if st.current == STATUS_WINDOW:
                    st.hint("no conversation yet: /to NAME to open one, or /msg NAME TEXT")
                else:
                    self._outgoing.put_nowait((st.current, text))
                    self.pane.follow()
            case cmd.Msg(to, text):
                self._outgoing.put_nowait((to, text))
            case cmd.To(name):
                self.open_conversation(name)
            case cmd.Users():
                st.users_requested += 1
                self._spawn(self.session.list_users())
            case cmd.Whois(name):
                self._whois(name)
            case cmd.Fingerprint():
                st.info(f"your fingerprint ({st.own_name}):")
                for row in fingerprint_rows(st.fingerprint):
                    st.info("    " + row)
            case cmd.Trust(name):
                self.session.trust(name)
                st.banners.pop(name, None)
                st.info(f"you now trust the new key of {name}")
            case cmd.Verify(name, fp):
                if self.session.verify(name, fp):
                    st.info(f"{name} is verified: the fingerprint matches their pinned key")
                else:
                    st.warn(f"the fingerprint does NOT match the key pinned for {name}; /whois {name}")
            case cmd.Raw():
                self._toggle_raw()
            case cmd.Clear():
                st.clear()
                self.pane.follow()
            case cmd.Help():
                for text in cmd.help_lines():
                    st.info(text)
            case cmd.Mouse():
                self.mouse = not self.mouse
                st.info(
                    "mouse wheel scrolls the pane"
                    if self.mouse
                    else "mouse off: the terminal selects text; PageUp/PageDown scroll"
                )
            case cmd.Quit():
                self.quit()

    def _toggle_raw(self) -> None:
        st = self.state
        if st.toggle_raw():
            # Mouse capture would stop the terminal from selecting the payloads.
            self._mouse_before_raw, self.mouse = self.mouse, False
            st.info("showing payloads under messages; select one with the mouse and pass it to")
            st.info("`securechat-client decrypt` as one quoted argument (line breaks are ignored).")
            if self._mouse_before_raw:
                st.info("mouse wheel scrolling is off meanwhile (/mouse turns it back on)")
        else:
            self.mouse = self._mouse_before_raw or self.mouse
            st.info("payloads hidden")

    def open_conversation(self, name: str) -> None:
        st = self.state
        st.switch(name)
        self.pane.follow()
        if name not in st.history_loaded:
            st.history_loaded.add(name)
            try:
                st.add_history(name, self.session.history(name))
            except Exception as exc:  # noqa: BLE001 - a broken history file must not block the chat
                st.hint(f"could not load the history with {name}: {describe_error(exc)}")
        st.info(
            f"talking to {name}" + ("" if st.users.get(name, True) else " (offline: messages are queued)")
        )

    def _whois(self, name: str) -> None:
        info = self.session.contact(name)
        online = self.state.users.get(name)
        seen = "" if online is None else (" online" if online else " offline")
        if info.fingerprint is None:
            self.state.info(
                f"{name}{seen}: no key pinned yet (it is pinned when you first exchange messages)"
            )
            return
        self.state.info(
            f"{name}{seen}: {pretty_fingerprint(info.fingerprint)} ({info.trust or 'unverified'})"
        )
        if info.pending_fingerprint:
            self.state.warn(
                f"{name} now presents another key: {pretty_fingerprint(info.pending_fingerprint)}; "
                f"/trust {name} once you have compared it"
            )

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
        return plain(status_bar(self.state, self.pane.scrolled))

    # --- tasks ------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(self._guarded(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, coro: Awaitable[Any], prefix: str = "") -> Any:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - session calls fail as hints
            self.state.hint(prefix + describe_error(exc))
            self.app.invalidate()
            return None

    async def _send_worker(self) -> None:
        # One worker, so messages leave in the order they were typed.
        while True:
            to, text = await self._outgoing.get()
            # The hint quotes the text: it has left the input line and would be lost.
            msg_id = await self._guarded(self.session.send(to, text), f"not sent to {to} ({_quote(text)}): ")
            if isinstance(msg_id, str):
                self.state.note_sent(msg_id, to, text)
                self.app.invalidate()

    def _session_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        self.state.connection = "offline"
        self.state.retry_at = None
        if exc is not None:
            self.exit_code = 1
            self.state.warn(f"the session ended: {describe_error(exc)}; /quit to leave")
        else:
            self.state.info("the session ended; /quit to leave")
        self.app.invalidate()

    async def run(self) -> int:
        """Run the session and the screen until the user quits; the exit code."""
        self.session.add_listener(self.on_event)
        session_task = asyncio.ensure_future(self.session.run())
        session_task.add_done_callback(self._session_ended)
        worker = asyncio.ensure_future(self._send_worker())
        try:
            result = await self.app.run_async()
        finally:
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


def _quote(text: str, limit: int = 40) -> str:
    flat = " ".join(text.split())
    return f'"{flat}"' if len(flat) <= limit else f'"{flat[: limit - 1]}…"'


def _safe(get: Callable[[], str]) -> str:
    try:
        return get()
    except Exception:  # noqa: BLE001 - the status bar can show "?" until Ready
        return ""


async def run_chat_ui(session: SessionAPI, *, first_run: bool = False) -> int:
    """The full-screen chat for ``session``; returns the process exit code."""
    return await ChatUI(session, first_run=first_run).run()
