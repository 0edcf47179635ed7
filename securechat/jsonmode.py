"""``securechat-client --json``: events as JSON lines on stdout, commands as JSON lines on stdin.

Output: exactly one JSON object per line, nothing else on stdout (logs go to
stderr). Session events use :func:`event_to_json`; replies to local commands
add three kinds::

    {"event":"contact","name":..,"fingerprint":..|null,"trust":..|null,"pending_fingerprint":..|null}
    {"event":"verify","name":..,"ok":true|false}
    {"event":"error","code":"bad_command"|<failure code>,"message":..,"fatal":false}

(``message``: the refusal's text alone; the terminals show it as ``code: text``,
:func:`securechat.commands.wording.refusal`.)

Input, one object per line::

    {"cmd":"send","to":"bob","text":"hi"}   {"cmd":"list","prefix":"b"}   {"cmd":"whois","name":"bob"}
    {"cmd":"trust","name":"bob"}   {"cmd":"verify","name":"bob","fingerprint":"..."}   {"cmd":"quit"}

Rooms (docs/protocol.md section 11; ``send`` takes ``"to":"#ops"``)::

    {"cmd":"room_create","room":"#ops","open":false}   {"cmd":"room_join","room":"#ops"}
    {"cmd":"room_add","room":"#ops","name":"bob"}   {"cmd":"room_remove","room":"#ops","name":"bob"}
    {"cmd":"room_admin","room":"#ops","name":"bob"}   {"cmd":"room_leave","room":"#ops"}
    {"cmd":"room_members","room":"#ops"}   {"cmd":"rooms"}

and their events: ``room`` (each verified change, and ``"change":"state"`` once per
room at sign-in and for ``room_members``), ``message`` and ``rejected`` with a
``room``, ``ack`` with ``member`` per member, ``rooms`` for the ``rooms`` command.

Commands are parsed by :func:`securechat.commands.parse_json` and run by the
same :class:`~securechat.commands.Executor` as the terminal front ends; this
module only turns events and outcomes into JSON lines.

``quit`` and end of input both wait (bounded) until the outbox is
acknowledged, then close. Exit status: 0, 1 if the server refused us for
good, 2 if messages were still unacknowledged at the end (they stay in the
outbox for the next run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from typing import IO, Any, Final

from .client import ClientSession, finish_session
from .commands import Executor, Hint, parse_json
from .commands.driver import feed, stdin_lines
from .commands.grammar import JSON, Quit, json_name
from .commands.outcomes import ContactShown, Failed, MembersShown, Outcome, Trusted, Verified
from .commands.wording import refusal
from .errors import (
    KeyChanged,
    KeyStoreError,
    ProtocolError,
    SecurechatError,
    ServerErrorReply,
    SessionClosed,
    UsageError,
)
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
    RoomChanged,
    RoomRejected,
    RoomsListed,
    ServerPinned,
    ServerRefusedAlert,
    SessionEvent,
    UsersListed,
)
from .records import ContactInfo
from .rooms.log import RoomState

log = logging.getLogger(__name__)

DRAIN_TIMEOUT: Final = 15.0

Emit = Callable[[dict[str, Any]], None]


def event_to_json(event: SessionEvent) -> dict[str, Any] | None:  # noqa: C901 - a match dispatcher over events
    """The ``--json`` line for an event (None for events that mode does not print)."""
    match event:
        case Ready(name, fp, new):
            return {"event": "ready", "name": name, "fingerprint": fp, "new": new}
        case ConnectionChanged(state, retry_in, detail):
            out: dict[str, Any] = {"event": "connection", "state": state}
            if retry_in is not None:
                out["retry_in"] = round(retry_in, 3)
            if detail:
                out["detail"] = detail
            return out
        case KeyGenerating(name, bits):
            return {"event": "key_generating", "name": name, "bits": bits}
        case MessageSent(msg_id, to, ts, _text, _payload):
            return {"event": "sent", "id": msg_id, "to": to, "ts": ts}
        case MessageReceived(sender, msg_id, ts, text, payload, server_ts, room, gone):
            return {
                "event": "message",
                **({"room": room} if room is not None else {}),
                **({"readers_gone": list(gone)} if gone else {}),
                "from": sender,
                "id": msg_id,
                "ts": ts,
                "server_ts": server_ts,
                "text": text,
                "payload": payload,
            }
        case MessageRejected(sender, msg_id, reason, detail, _payload, room):
            about = {"room": room} if room is not None else {}
            return {"event": "rejected", **about, "from": sender, "id": msg_id, "reason": reason, "detail": detail}
        case Acked(msg_id, to, status, member):
            return {"event": "ack", "id": msg_id, "to": to, **({"member": member} if member else {}), "status": status}
        case KeyChangedAlert(name, old, new):
            return {"event": "key_changed", "name": name, "old": old, "new": new}
        case ContactPinned(name, fp, trust):
            return {"event": "pinned", "name": name, "fingerprint": fp, "trust": trust}
        case UsersListed(users, more):
            return {"event": "users", "users": [{"name": u.name, "online": u.online} for u in users], "more": more}
        case PresenceChanged(name, online):
            return {"event": "presence", "name": name, "online": online}
        case ErrorReported(code, message, fatal, msg_id, retried):
            err: dict[str, Any] = {"event": "error", "code": code, "message": message, "fatal": fatal}
            if msg_id is not None:
                err["id"], err["retried"] = msg_id, retried
            return err
        case ServerPinned(server, fp):
            return {"event": "server_pinned", "server": server, "fingerprint": fp}
        case ServerRefusedAlert(server, reason, detail, presented, wanted, accept):
            refused: dict[str, Any] = {"event": "server_refused", "server": server, "reason": reason, "detail": detail}
            if presented is not None:
                refused.update(presented=presented, wanted=wanted, accept=accept)
            return refused
    return room_event_to_json(event)


def room_event_to_json(event: SessionEvent) -> dict[str, Any] | None:
    """The ``--json`` line for the events of rooms that are not messages or acks."""
    match event:
        case RoomChanged(room, change, name, by, members, admins):
            return {"event": "room", "room": room, "change": change, "name": name, "by": by,
                    "members": list(members), "admins": list(admins)}
        case RoomRejected(room, reason, detail, seq):
            return {"event": "rejected", "room": room, "reason": reason, "detail": detail, "seq": seq}
        case RoomsListed(rooms):
            listed = [{"room": r.room, "kind": r.kind, "member": r.member, "members": r.members} for r in rooms]
            return {"event": "rooms", "rooms": listed}
    return None


def room_state_json(state: RoomState) -> dict[str, Any]:
    """``room_members``: the room as verified here, as a ``room`` event with ``"change":"state"``."""
    return {"event": "room", "room": state.room, "change": "state", "name": None, "by": None,
            "members": state.sorted_members(), "admins": sorted(state.admins)}


def announce_key_generation(name: str, bits: int) -> None:
    """The ``key_generating`` line, written before the session (and its event stream) exists."""
    obj = event_to_json(KeyGenerating(name, bits))
    if obj is not None:
        write_json_line(obj)


def write_json_line(obj: dict[str, Any], out: IO[str] | None = None) -> None:
    stream = out if out is not None else sys.stdout
    stream.write(json.dumps(obj, separators=(",", ":")) + "\n")
    stream.flush()


def contact_json(info: ContactInfo) -> dict[str, Any]:
    return {
        "event": "contact",
        "name": info.name,
        "fingerprint": info.fingerprint,
        "trust": info.trust,
        "pending_fingerprint": info.pending_fingerprint,
    }


def error_json(code: str, message: str, cmd: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"event": "error", "code": code, "message": message, "fatal": False}
    if cmd is not None:
        out["cmd"] = cmd
    return out


def failure_code(exc: Exception) -> str:
    """The ``code`` of the error line for a command that failed."""
    if isinstance(exc, KeyChanged):
        return "key_changed"
    if isinstance(exc, ServerErrorReply):
        return exc.code
    if isinstance(exc, SessionClosed):
        return "offline"
    if isinstance(exc, ProtocolError | UsageError):
        return exc.code
    if isinstance(exc, KeyStoreError):
        return "keystore"
    return "failed" if isinstance(exc, SecurechatError) else "internal_error"


def outcome_to_json(outcome: Outcome) -> dict[str, Any] | None:
    """The reply line for a command's outcome (None for outcomes --json has no line for)."""
    match outcome:
        case ContactShown(info):
            return contact_json(info)
        case Trusted(_before, after):
            return contact_json(after)
        case Verified(name, ok):
            return {"event": "verify", "name": name, "ok": ok}
        case MembersShown(state):
            return room_state_json(state)
        case Failed(command, error):
            return error_json(failure_code(error), refusal(error)[1], json_name(command))  # the code is its field
    return None


class JsonFrontEnd:
    """Events and replies as JSON lines through ``emit``; stops writing once its reader is gone."""

    def __init__(self, session: ClientSession, emit: Emit, *, own_stdout: bool) -> None:
        self.session = session
        self.executor = Executor(session, JSON)
        self.emit = emit
        self.own_stdout = own_stdout
        self.reader_gone = asyncio.Event()

    def out(self, obj: dict[str, Any]) -> None:
        if self.reader_gone.is_set():
            return
        try:
            self.emit(obj)
        except (BrokenPipeError, ConnectionResetError):
            # Whoever read our stdout is gone: quit (after the bounded drain).
            self.reader_gone.set()
            if self.own_stdout:
                with contextlib.suppress(OSError, ValueError):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

    def on_event(self, event: SessionEvent) -> None:
        self.executor.observe(event)  # --json prints every event; the executor keeps its books
        obj = event_to_json(event)
        if obj is not None:
            self.out(obj)

    async def handle(self, line: bytes) -> bool:
        """Run one command line; False for ``quit``."""
        if not line.strip():
            return True
        command = parse_json(line)
        if isinstance(command, Hint):
            self.out(error_json(command.code, command.text, command.cmd))
            return True
        if isinstance(command, Quit):
            return False
        for outcome in await self.executor.execute(command):
            obj = outcome_to_json(outcome)
            if obj is not None:
                self.out(obj)
        return True


async def run_json_mode(
    session: ClientSession,
    lines: AsyncIterator[bytes] | None = None,
    emit: Emit | None = None,
    *,
    drain_timeout: float = DRAIN_TIMEOUT,
) -> int:
    """Drive ``session`` from JSON command lines until ``quit`` or end of input; the exit status."""
    front = JsonFrontEnd(session, emit or write_json_line, own_stdout=emit is None)
    session.add_listener(front.on_event)
    run_task = asyncio.create_task(session.run())
    gone_task = asyncio.create_task(front.reader_gone.wait())
    try:
        # Ends at quit, end of input, the session ending by itself, or stdout's reader leaving.
        await feed(lines if lines is not None else stdin_lines(), front.handle, {run_task, gone_task})
        status = 0
        if not run_task.done() and not await session.wait_idle(drain_timeout):
            left = session.unacknowledged()
            front.out(
                error_json(
                    "unacknowledged", f"{left} message(s) not acknowledged; kept in the outbox for next time"
                )
            )
            status = 2
    finally:
        gone_task.cancel()
        failed = await finish_session(session, run_task)
    return 1 if failed else status
