"""``--plain``: the chat as lines (also when the full-screen UI is unavailable).

The commands are the full-screen UI's, from the same layer
(:mod:`securechat.commands`): the same grammar, the same executor, the same
wording. This module only reads lines and prints events and outcomes: ``* ``
before information, ``! `` before hints and warnings, ``[HH:MM]`` before
messages. On a terminal the prompt is prompt_toolkit's (with
``patch_stdout`` so events do not tear the input line); otherwise lines are
read from stdin.

Every line goes out through :meth:`LineChat.write`: sanitised and cut into rows
no wider than the terminal by :func:`securechat.commands.sanitize.rows`. The
program's own rows start at the first column (``[``, ``* ``, ``! ``) or, for an
acknowledgement, after two spaces; the rows that continue a message start
after :data:`MESSAGE_INDENT` spaces, so a peer's text can never start a row
that looks like ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator

from .client import ClientSession, finish_session
from .clock import now_ms
from .commands import Executor, Hint, parse_line, times
from .commands import roomwording as rooms_say
from .commands import sanitize as safe
from .commands import wording as say
from .commands.driver import Ending, feed, stdin_lines
from .commands.grammar import PLAIN, Clear, Quit, Raw
from .commands.outcomes import Level, Local, Outcome, Switched
from .events import (
    Acked,
    ContactPinned,
    ErrorReported,
    KeyChangedAlert,
    KeyGenerating,
    MessageReceived,
    MessageRejected,
    MessageSent,
    PresenceChanged,
    Ready,
    RoomChanged,
    RoomRejected,
    RoomsListed,
    ServerPinned,
    ServerRefusedAlert,
    SessionAPI,
    SessionEvent,
)
from .names import format_fingerprint
from .records import HistoryEntry, room_ack_status

log = logging.getLogger(__name__)

PIPED_DRAIN_TIMEOUT = 10.0
# Rows that continue a message (a line break in it, or a row the terminal would wrap).
MESSAGE_INDENT = 8


def _marked(level: Level, text: str) -> str:
    return ("* " if level == "info" else "! ") + text


def message_lines(
    sender: str, to: str | None, ts: int, text: str, payload: str | None, server_ts: int | None = None
) -> list[str]:
    """An own message (``to`` set) or a received one; the payload under it with ``/raw``.

    Dated by the signed ``ts``, with the server's time too when they are far apart (:mod:`~securechat.commands.times`).
    """
    who = f"me -> {to}" if to is not None else sender
    when = times.message_clock(ts, server_ts, now_ms())
    return [f"[{when}] {who}: {text}", *([payload] if payload else [])]


def history_lines(entry: HistoryEntry) -> list[str]:
    """A persisted message, as it was shown when it came or went."""
    if entry.direction == "in":
        who = f"{entry.peer} {entry.sender}" if entry.sender else entry.peer  # a room's message names its writer
        return message_lines(who, None, entry.ts, entry.text, None, entry.server_ts)
    status = entry.status if entry.status and entry.status != "sending" else None
    ack = [f"  ({status} to {entry.peer})"] if status else []
    return message_lines("", entry.peer, entry.ts, entry.text, None) + ack


def format_event(event: SessionEvent, raw: bool = False) -> list[str]:
    """The lines for an event (none for events not worth one); ``raw`` adds payloads."""
    match event:
        case Ready(name, fp, _new):
            return [f"* signed in as {name} (fingerprint {format_fingerprint(fp)})"]
        # Why the connection is down is said once per cause by the executor (Seen.outcomes);
        # a refusal for good by its error line.
        case KeyGenerating(name, bits):
            return [_marked("info", say.key_generating_line(name, bits))]
        case MessageSent(_id, to, ts, text, payload):
            return message_lines("", to, ts, text, payload if raw else None)
        case MessageReceived(sender, _id, ts, text, payload, server_ts, None):
            return message_lines(sender, None, ts, text, payload if raw else None, server_ts)
        case MessageRejected(sender, _id, reason, detail, payload, room):
            line = _marked("warn", say.rejected_line(sender, reason, detail) + (f" in {room}" if room else ""))
            return [line, *([payload] if raw and payload else [])]
        case Acked(msg_id, to, "undeliverable", None):  # it may be far above: named like an error's message
            return [f"  (undeliverable to {to})", _marked("warn", f"{say.undeliverable_line(to)} (message {msg_id[:8]})")]
        case Acked(_id, to, status, None):
            return [f"  ({status} to {to})"]
    return _notice_lines(event) or room_event_lines(event, raw)


def _notice_lines(event: SessionEvent) -> list[str]:
    """Keys, presence, errors and servers: marked lines (none for events not worth one)."""
    match event:
        case KeyChangedAlert(name):
            return [_marked("warn", say.key_changed_line(name))] + [
                _marked("warn", line) for line in say.banner_lines(event)
            ]
        case ContactPinned(name, fp, trust):
            return [_marked("info", say.pinned_line(name, fp, trust))]
        case PresenceChanged(name, online):
            return [_marked("info", say.presence_line(name, online))]
        case ErrorReported(code, message, fatal, msg_id, retried):
            about = f" (message {msg_id[:8]}{', sent again' if retried else ''})" if msg_id else ""
            return [_marked("warn", say.error_line(code, message, fatal) + about)]
        case ServerPinned(server, fp):
            return [_marked("info", say.server_pinned_line(server, fp))]
        case ServerRefusedAlert():
            return [_marked("warn", line) for line in say.server_refused_lines(event)]
    return []


def room_event_lines(event: SessionEvent, raw: bool = False) -> list[str]:
    """The lines for the events of rooms (docs/protocol.md 11): their messages, changes, acks and listings."""
    match event:
        case MessageReceived(sender, _id, ts, text, payload, server_ts, room, gone) if room is not None:
            lines = message_lines(f"{room} {sender}", None, ts, text, payload if raw else None, server_ts)
            return lines + ([_marked("warn", rooms_say.readers_gone_line(sender, room, gone))] if gone else [])
        case Acked(msg_id, room, "undeliverable", str(member)):
            return [_marked("warn", f"{say.undeliverable_line(member, room)} (message {msg_id[:8]})")]
        case Acked(_id, room, _status, str(member), delivered, total):
            return [f"  ({room_ack_status(delivered, total, alone=not member)} {'to' if member else 'in'} {room})"]
        case RoomChanged():
            return [_marked("info", rooms_say.room_change_line(event))]
        case RoomRejected():
            return [_marked("warn", rooms_say.room_rejected_line(event))]
        case RoomsListed(rooms):
            return [_marked("info", rooms_say.rooms_line(rooms))]
    return []


class LineChat:
    """The ``--plain`` front end, apart from how lines arrive and leave (testable)."""

    def __init__(
        self,
        session: SessionAPI,
        write: Callable[[str], None],
        clear: Callable[[], None] | None = None,
        width: Callable[[], int | None] | None = None,
    ) -> None:
        self.session = session
        self.executor = Executor(session, PLAIN)
        self._write = write
        self._clear = clear
        self._width = width
        self.show_raw = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def current(self) -> str | None:
        return self.executor.current

    def write(self, text: str) -> None:
        """One line (or a multi-line message) on the output: sanitised, in rows that fit the terminal."""
        # A message line is ours up to its "] name: "; what follows may be a peer's.
        indent = MESSAGE_INDENT if text.startswith("[") else safe.OWN_INDENT
        for row in safe.rows(text, indent, self._width() if self._width is not None else None):
            self._write(row)

    def on_event(self, event: SessionEvent) -> None:
        """Session listener: print the event; never raises."""
        try:
            seen = self.executor.observe(event)
            for outcome in seen.outcomes:
                self.render(outcome)
            for line in format_event(event, self.show_raw) if seen.show else []:
                self.write(line)
            if isinstance(event, Ready):
                task = asyncio.ensure_future(self._refresh())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except Exception as exc:  # noqa: BLE001 - a hostile peer must not end the chat
            self.write(_marked("warn", f"could not show an event: {say.describe_error(exc)}"))

    async def _refresh(self) -> None:
        for outcome in await self.executor.refresh():
            self.render(outcome)

    def leaving(self) -> None:
        """The user is leaving: a directory request still out is dropped, not reported as failed."""
        for task in self._tasks:
            task.cancel()

    async def handle(self, line: str) -> bool:
        """Run one input line; False when the user asked to quit."""
        command = parse_line(line.rstrip("\r\n"))
        if isinstance(command, Hint):
            self.write(_marked("hint", command.text))
        elif command is not None:
            for outcome in await self.executor.execute(command):
                if not self.render(outcome):
                    return False
        return True

    def render(self, outcome: Outcome) -> bool:
        """Print an outcome; False for ``/quit``."""
        match outcome:
            case Switched(_name, history):
                for entry in history:
                    for line in history_lines(entry):
                        self.write(line)
            case Local(Quit()):
                return False
            case Local(Raw()):
                self.show_raw = not self.show_raw
                for text in say.raw_lines(self.show_raw):
                    self.write(_marked("info", text))
            case Local(Clear()) if self._clear is not None:
                self._clear()
        for level, text in say.describe(outcome):
            self.write(_marked(level, text))
        return True


async def _terminal_lines(prompt: Callable[[], str]) -> AsyncIterator[str]:
    from prompt_toolkit import PromptSession

    prompt_session: PromptSession[str] = PromptSession()
    while True:
        try:
            yield await prompt_session.prompt_async(prompt())
        except (EOFError, KeyboardInterrupt):
            return


async def _piped_lines() -> AsyncIterator[str]:
    async for raw in stdin_lines():
        yield raw.decode("utf-8", errors="replace")


def _clear_terminal() -> None:
    from prompt_toolkit.shortcuts import clear

    clear()


@contextlib.contextmanager
def _on_sigterm(handler: Callable[[], object]) -> Iterator[None]:
    """SIGTERM ends the chat like /quit (the prompt restores the terminal) instead of killing it."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGTERM, handler)
    except (NotImplementedError, RuntimeError):
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def run_line_ui(session: ClientSession, *, first_run: bool = False) -> int:
    """Chat line by line until /quit or end of input; the exit status."""
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    chat = LineChat(
        session, lambda text: print(text, flush=True), _clear_terminal if tty else None, safe.terminal_columns
    )
    session.add_listener(chat.on_event)
    signed_in = asyncio.Event()
    session.add_listener(lambda event: signed_in.set() if isinstance(event, Ready) else None)
    if first_run:
        chat.write(f"* your fingerprint: {format_fingerprint(session.fingerprint)} (type /help for commands)")
    if session.plaintext:
        chat.write(_marked("warn", say.PLAINTEXT_WARNING))
    run_task = asyncio.create_task(session.run())
    patch: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if tty:
        from prompt_toolkit.patch_stdout import patch_stdout

        patch = patch_stdout()
    status = 0
    terminated: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def terminate() -> None:
        if not terminated.done():
            terminated.set_result(None)

    with patch, _on_sigterm(terminate):
        lines = _terminal_lines(lambda: f"{chat.current or session.name}> ") if tty else _piped_lines()
        try:
            ending = await feed(lines, chat.handle, {run_task, terminated})
            if ending is Ending.EOF and not tty:  # piped input: sign in once, let what was sent get acknowledged
                signed = asyncio.ensure_future(signed_in.wait())
                try:
                    await asyncio.wait(
                        {signed, run_task}, timeout=PIPED_DRAIN_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    signed.cancel()  # never left pending when the session ended first or the wait timed out
                await session.wait_idle(PIPED_DRAIN_TIMEOUT)
        finally:
            chat.leaving()
            if await finish_session(session, run_task):
                status = 1
    return status
