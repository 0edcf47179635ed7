"""A simple line-based chat front end (``--plain``, or when the full-screen UI is unavailable).

Commands: ``/msg NAME TEXT``, ``/to NAME``, plain text to the current
conversation, ``/users``, ``/whois NAME``, ``/trust NAME``,
``/verify NAME FINGERPRINT``, ``/history [NAME]``, ``/help``, ``/quit``.
Events are printed as lines. On a terminal the prompt is prompt_toolkit's
(with ``patch_stdout`` so events do not tear the input line); otherwise
lines are read from stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import sys
from collections.abc import AsyncIterator, Callable

from .client import ClientSession, finish_session
from .errors import SecurechatError, SessionClosed
from .events import (
    Acked,
    ConnectionChanged,
    ContactPinned,
    ErrorReported,
    KeyChangedAlert,
    KeyGenerating,
    MessageReceived,
    MessageRejected,
    MessageSent,
    PresenceChanged,
    Ready,
    SessionEvent,
    UsersListed,
)
from .names import format_fingerprint
from .records import ContactInfo

log = logging.getLogger(__name__)

HELP = (
    "/msg NAME TEXT   send TEXT to NAME (and make NAME the current conversation)\n"
    "/to NAME         switch the current conversation; plain lines go there\n"
    "/users           list users          /whois NAME   show NAME's key and trust\n"
    "/trust NAME      accept NAME's changed key\n"
    "/verify NAME FP  mark NAME verified if FP matches\n"
    "/history [NAME]  show the conversation      /quit   leave"
)


def _clock(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%H:%M")


def format_event(event: SessionEvent) -> str | None:
    """One line for an event (None for events not worth a line)."""
    match event:
        case Ready(name, fp, _new):
            return f"* signed in as {name} (fingerprint {format_fingerprint(fp)})"
        case ConnectionChanged("reconnecting", retry_in, detail):
            extra = f": {detail}" if detail else ""
            return f"* connection lost{extra}; retrying in {retry_in or 0:.1f} s"
        case ConnectionChanged("offline", _, detail) if detail:
            return f"* offline: {detail}"
        case ConnectionChanged():
            return None
        case KeyGenerating(name, bits):
            return f"* generating a {bits}-bit RSA key for {name}…"
        case MessageSent(_id, to, ts, text, _payload):
            return f"[{_clock(ts)}] me -> {to}: {text}"
        case MessageReceived(sender, _id, ts, text, _payload, _server_ts):
            return f"[{_clock(ts)}] {sender}: {text}"
        case MessageRejected(sender, msg_id, reason, detail, _payload):
            return f"! rejected a message from {sender} ({reason}{': ' + detail if detail else ''})"
        case Acked(_id, to, status):
            return f"  ({status} to {to})"
        case KeyChangedAlert(name, old, new):
            return (
                f"! WARNING: the key of {name} CHANGED from {format_fingerprint(old)} to "
                f"{format_fingerprint(new)}. Nothing is sent to {name} until you '/trust {name}' "
                "(verify the new fingerprint with them first)."
            )
        case ContactPinned(name, fp, trust):
            return f"* pinned the key of {name}: {format_fingerprint(fp)} ({trust})"
        case UsersListed(users):
            shown = ", ".join(f"{u.name}{'' if u.online else ' (offline)'}" for u in users)
            return f"* users: {shown or '(none)'}"
        case PresenceChanged(name, online):
            return f"* {name} is {'online' if online else 'offline'}"
        case ErrorReported(code, message, fatal, msg_id):
            about = f" (message {msg_id[:8]})" if msg_id else ""
            return f"! {'fatal ' if fatal else ''}error {code}{about}: {message}"
    return None


def format_contact(info: ContactInfo) -> str:
    if info.fingerprint is None:
        return f"* {info.name}: no key pinned"
    line = f"* {info.name}: {format_fingerprint(info.fingerprint)} ({info.trust})"
    if info.pending_fingerprint:
        line += f"; new key waiting for /trust: {format_fingerprint(info.pending_fingerprint)}"
    return line


class LineChat:
    """The command interpreter, separate from how lines arrive and leave (testable)."""

    def __init__(self, session: ClientSession, write: Callable[[str], None]) -> None:
        self.session = session
        self.write = write
        self.current: str | None = None

    async def handle(self, line: str) -> bool:
        """Run one input line; False when the user asked to quit."""
        line = line.strip()
        if not line:
            return True
        try:
            return await self._handle(line)
        except SecurechatError as exc:
            self.write(f"! {exc}")
        return True

    async def _handle(self, line: str) -> bool:
        if not line.startswith("/") or line.startswith("//"):
            text = line[1:] if line.startswith("//") else line
            if self.current is None:
                self.write("! no conversation yet: use /to NAME or /msg NAME TEXT")
            else:
                await self.session.send(self.current, text)
            return True
        cmd, _, rest = line.partition(" ")
        rest = rest.strip()
        cmd = cmd.lower()
        if cmd in ("/quit", "/exit", "/q"):
            return False
        if cmd == "/help":
            self.write(HELP)
        elif cmd == "/msg":
            to, _, text = rest.partition(" ")
            if not to or not text.strip():
                self.write("! usage: /msg NAME TEXT")
            else:
                self.current = self.session.contact(to).name
                await self.session.send(to, text)
        elif cmd == "/to":
            if not rest:
                self.write("! usage: /to NAME")
            else:
                self.current = self.session.contact(rest).name
                self.write(f"* talking to {self.current}")
        elif cmd == "/users":
            await self.session.list_users()
        elif cmd == "/whois":
            if not rest:
                self.write("! usage: /whois NAME")
            else:
                try:
                    info = await self.session.lookup(rest)
                except SessionClosed:
                    info = self.session.contact(rest)
                self.write(format_contact(info))
        elif cmd == "/trust":
            self.session.trust(rest)
            self.write(format_contact(self.session.contact(rest)))
        elif cmd == "/verify":
            name, _, fp = rest.partition(" ")
            ok = self.session.verify(name, fp)
            self.write(f"* {name} verified" if ok else f"! the fingerprint does not match the key of {name}")
        elif cmd == "/history":
            peer = rest or self.current
            if peer is None:
                self.write("! usage: /history NAME")
            else:
                for entry in self.session.history(peer):
                    who = "me" if entry.direction == "out" else entry.peer
                    status = f"  ({entry.status})" if entry.status else ""
                    self.write(f"[{_clock(entry.ts)}] {who}: {entry.text}{status}")
        else:
            self.write(f"! unknown command {cmd}; /help lists them")
        return True


async def _terminal_lines(prompt: Callable[[], str]) -> AsyncIterator[str]:
    from prompt_toolkit import PromptSession

    prompt_session: PromptSession[str] = PromptSession()
    while True:
        try:
            yield await prompt_session.prompt_async(prompt())
        except EOFError:
            return
        except KeyboardInterrupt:
            return


async def _piped_lines() -> AsyncIterator[str]:
    from .jsonmode import stdin_lines

    async for raw in stdin_lines():
        yield raw.decode("utf-8", errors="replace")


async def run_line_ui(session: ClientSession, *, first_run: bool = False) -> int:
    """Chat line by line until /quit or end of input; the exit status."""
    tty = sys.stdin.isatty() and sys.stdout.isatty()

    def write(text: str) -> None:
        print(text, flush=True)

    chat = LineChat(session, write)

    def show(event: SessionEvent) -> None:
        line = format_event(event)
        if line is not None:
            write(line)

    session.add_listener(show)
    if first_run:
        write(f"* your fingerprint: {format_fingerprint(session.fingerprint)} (type /help for commands)")
    run_task = asyncio.create_task(session.run())
    status = 0
    patch: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if tty:
        from prompt_toolkit.patch_stdout import patch_stdout

        patch = patch_stdout()
    with patch:
        lines = _terminal_lines(lambda: f"{chat.current or session.name}> ") if tty else _piped_lines()
        iterator = lines.__aiter__()
        try:
            while True:
                next_line = asyncio.ensure_future(iterator.__anext__())
                await asyncio.wait({next_line, run_task}, return_when=asyncio.FIRST_COMPLETED)
                if not next_line.done():
                    next_line.cancel()
                    break
                try:
                    line = next_line.result()
                except StopAsyncIteration:
                    if not tty:  # piped input: let what was sent get acknowledged
                        await session.wait_idle(10.0)
                    break
                if not await chat.handle(line):
                    break
        finally:
            if await finish_session(session, run_task):
                status = 1
    return status
