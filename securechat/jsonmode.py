"""``securechat-client --json``: events as JSON lines on stdout, commands as JSON lines on stdin.

Output: exactly one JSON object per line, nothing else on stdout (logs go to
stderr). Session events use :func:`securechat.events.event_to_json`; replies
to local commands add three kinds::

    {"event":"contact","name":..,"fingerprint":..|null,"trust":..|null,"pending_fingerprint":..|null}
    {"event":"verify","name":..,"ok":true|false}
    {"event":"error","code":"bad_command"|<failure code>,"message":..,"fatal":false}

Input, one object per line::

    {"cmd":"send","to":"bob","text":"hi"}   {"cmd":"list"}   {"cmd":"whois","name":"bob"}
    {"cmd":"trust","name":"bob"}   {"cmd":"verify","name":"bob","fingerprint":"..."}   {"cmd":"quit"}

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
import threading
from collections.abc import AsyncIterator, Callable
from typing import IO, Any, Final

from .client import ClientSession, finish_session
from .errors import (
    KeyChanged,
    KeyStoreError,
    ProtocolError,
    SecurechatError,
    ServerErrorReply,
    SessionClosed,
    UsageError,
)
from .events import SessionEvent, event_to_json
from .records import ContactInfo

log = logging.getLogger(__name__)

DRAIN_TIMEOUT: Final = 15.0
MAX_COMMAND_LINE: Final = 1 << 20
READ_CHUNK: Final = 65536

Emit = Callable[[dict[str, Any]], None]


class BadCommand(Exception):
    """A command line that is not one of the documented JSON commands."""


async def stdin_lines(fd: int | None = None) -> AsyncIterator[bytes]:
    """Lines from file descriptor ``fd`` (default: stdin) without blocking the event loop.

    A daemon thread does the blocking reads, so this works for pipes, files
    and terminals alike; the iterator ends at end of input. The thread uses
    ``os.read`` rather than ``sys.stdin``: a daemon thread parked inside a
    buffered reader's lock aborts the interpreter at exit.
    """
    source = fd if fd is not None else sys.stdin.fileno()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def put(item: bytes | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop may be gone at exit
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def reader() -> None:
        pending = b""
        try:
            while True:
                chunk = os.read(source, READ_CHUNK)
                if not chunk:
                    break
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    put(line + b"\n")
                if len(pending) > MAX_COMMAND_LINE:  # an endless line: hand it on to be refused
                    put(pending)
                    pending = b""
        except OSError:
            pass
        finally:
            if pending:
                put(pending)
            put(None)

    threading.Thread(target=reader, name="securechat-stdin", daemon=True).start()
    while True:
        item = await queue.get()
        if item is None:
            return
        yield item


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


def error_json(code: str, message: str) -> dict[str, Any]:
    return {"event": "error", "code": code, "message": message, "fatal": False}


def failure_code(exc: SecurechatError) -> str:
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
    return "failed"


def parse_command(line: bytes) -> dict[str, Any]:
    """One input line as a command object; raise :class:`BadCommand`."""
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadCommand("not a JSON object on one line") from None
    if not isinstance(obj, dict):
        raise BadCommand("a command must be a JSON object")
    cmd = obj.get("cmd")
    required: dict[str, tuple[str, ...]] = {
        "send": ("to", "text"),
        "list": (),
        "trust": ("name",),
        "verify": ("name", "fingerprint"),
        "whois": ("name",),
        "quit": (),
    }
    if not isinstance(cmd, str) or cmd not in required:
        raise BadCommand(f"unknown command {cmd!r}; expected one of {', '.join(sorted(required))}")
    for key in required[cmd]:
        if not isinstance(obj.get(key), str):
            raise BadCommand(f"'{cmd}' needs a string '{key}'")
    return obj


async def execute(session: ClientSession, command: dict[str, Any], emit: Emit) -> None:
    """Run one parsed command; failures become error lines, never exceptions."""
    cmd = command["cmd"]
    try:
        if cmd == "send":
            await session.send(command["to"], command["text"])
        elif cmd == "list":
            await session.list_users()
        elif cmd == "trust":
            session.trust(command["name"])
            emit(contact_json(session.contact(command["name"])))
        elif cmd == "verify":
            ok = session.verify(command["name"], command["fingerprint"])
            emit({"event": "verify", "name": session.contact(command["name"]).name, "ok": ok})
        elif cmd == "whois":
            try:
                info = await session.lookup(command["name"])
            except SessionClosed:
                info = session.contact(command["name"])  # offline: what we have pinned
            emit(contact_json(info))
    except SecurechatError as exc:
        out = error_json(failure_code(exc), str(exc))
        out["cmd"] = cmd
        emit(out)


async def run_json_mode(
    session: ClientSession,
    lines: AsyncIterator[bytes] | None = None,
    emit: Emit | None = None,
    *,
    drain_timeout: float = DRAIN_TIMEOUT,
) -> int:
    """Drive ``session`` from JSON command lines until ``quit`` or end of input; the exit status."""
    write: Emit = emit if emit is not None else write_json_line
    source = lines if lines is not None else stdin_lines()
    reader_gone = asyncio.Event()

    def out(obj: dict[str, Any]) -> None:
        if reader_gone.is_set():
            return
        try:
            write(obj)
        except (BrokenPipeError, ConnectionResetError):
            # Whoever read our stdout is gone: quit (after the bounded drain).
            reader_gone.set()
            if emit is None:
                with contextlib.suppress(OSError, ValueError):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

    def on_event(event: SessionEvent) -> None:
        obj = event_to_json(event)
        if obj is not None:
            out(obj)

    session.add_listener(on_event)
    run_task = asyncio.create_task(session.run())
    gone_task = asyncio.create_task(reader_gone.wait())
    iterator = source.__aiter__()
    try:
        while True:
            next_line = asyncio.ensure_future(iterator.__anext__())
            await asyncio.wait({next_line, run_task, gone_task}, return_when=asyncio.FIRST_COMPLETED)
            if not next_line.done():  # the session ended by itself, or stdout's reader left
                next_line.cancel()
                break
            try:
                line = next_line.result()
            except StopAsyncIteration:
                break
            if not line.strip():
                continue
            try:
                command = parse_command(line)
            except BadCommand as exc:
                out(error_json("bad_command", str(exc)))
                continue
            if command["cmd"] == "quit":
                break
            await execute(session, command, out)
        status = 0
        if not run_task.done() and not await session.wait_idle(drain_timeout):
            left = session.unacknowledged()
            out(
                error_json(
                    "unacknowledged", f"{left} message(s) not acknowledged; kept in the outbox for next time"
                )
            )
            status = 2
    finally:
        gone_task.cancel()
        failed = await finish_session(session, run_task)
    return 1 if failed else status
