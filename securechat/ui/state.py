"""What the chat screen shows, as plain data: no prompt_toolkit, no network.

:class:`ChatState` folds session events into windows of :class:`Line` objects
(one window per conversation, plus the status window ``""``), unread counts,
key-change banners and the connection state.  The layout only renders it, and
tests can drive it with events alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from securechat.commands import roomwording, wording
from securechat.commands.outcomes import Level
from securechat.commands.rooms import Seats
from securechat.commands.sanitize import one_line, sanitize
from securechat.commands.wording import fingerprint_rows
from securechat.events import (
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
from securechat.records import HistoryEntry, room_ack_status

STATUS_WINDOW = ""
# What the pane keeps, bounded so a chatty or hostile peer cannot grow the UI or
# its redraws without limit (docs/security.md, "Huge messages"; docs/performance.md):
# lines per window, enough scrollback for a session,
MAX_LINES = 5000
# characters of one message shown (text) and line breaks in it; the rest is cut with a note
# (`securechat-client history` prints it all),
MAX_LINE_CHARS = 8192
MAX_LINE_BREAKS = 200
# a message's pasted payload kept for /raw only up to this size,
MAX_PAYLOAD_CHARS = 64 * 1024
# and characters (text and payloads) kept per window and in all windows together.
MAX_WINDOW_CHARS = 2 * 2**20
MAX_TOTAL_CHARS = 8 * 2**20

LineKind = Literal["in", "out", "info", "hint", "warn", "rejected"]

STATUS_LABELS = {
    "sending": "sending…",
    "queued": "queued",
    "delivered": "delivered",
}


def clip(text: str) -> str:
    """``text`` as the pane keeps it: at most :data:`MAX_LINE_CHARS` and :data:`MAX_LINE_BREAKS`, with a note."""
    cut = min(len(text), MAX_LINE_CHARS)
    at = -1
    for _ in range(MAX_LINE_BREAKS + 1):
        at = text.find("\n", at + 1, cut)
        if at < 0:
            break
    else:
        cut = at
    if cut >= len(text):
        return text
    return text[:cut] + "\n" + wording.clipped_note(len(text) - cut)


def kept_payload(payload: str | None) -> str | None:
    """A payload kept for /raw, or None when it is too large to keep (docs/security.md)."""
    return payload if payload is None or len(payload) <= MAX_PAYLOAD_CHARS else None


def cost(line: Line) -> int:
    """Characters a line holds (its text and payload)."""
    return len(line.text) + len(line.payload or "")


@dataclass(eq=False)
class Line:
    """One entry of the message pane; own messages change ``status`` in place."""
    kind: LineKind
    ts: float
    text: str
    sender: str = ""
    msg_id: str | None = None
    status: str = ""
    payload: str | None = None
    server_ts: float | None = None  # incoming: the server's time (seconds), shown if far from ``ts``
    to: str = ""  # own: the conversation it went to, named where it is shown in another window


@dataclass
class ChatState:
    """Everything the screen shows; mutated only through its methods."""

    own_name: str = ""
    fingerprint: str = ""
    first_run: bool = False
    clock: Callable[[], float] = time.time
    windows: dict[str, list[Line]] = field(default_factory=lambda: {STATUS_WINDOW: []})
    current: str = STATUS_WINDOW
    unread: dict[str, int] = field(default_factory=dict)
    banners: dict[str, KeyChangedAlert] = field(default_factory=dict)
    connection: str = "connecting"
    connection_detail: str = ""
    plaintext: bool = False  # no TLS: the status bar says so all the time
    retry_at: float | None = None
    show_raw: bool = False
    by_id: dict[str, Line] = field(default_factory=dict)
    intro_shown: bool = False
    rooms: dict[str, Seats] = field(default_factory=dict)  # each room's members and admins, as verified
    left_status: bool = False
    generation: int = 0  # bumped on every change, so views can tell that something was appended
    listed: set[str] = field(default_factory=set)  # the open rooms /rooms showed: /join completes them
    kept: dict[str, int] = field(default_factory=dict)  # characters kept per window (:func:`cost`)

    # --- windows --------------------------------------------------------------

    def window(self, name: str) -> list[Line]:
        return self.windows.setdefault(name, [])

    def visible_lines(self) -> list[Line]:
        return self.windows.get(self.current, [])

    def _append(self, name: str, line: Line) -> None:
        self.window(name).append(line)
        self.kept[name] = self.kept.get(name, 0) + cost(line)
        self._trim(name)
        self.generation += 1

    def _recount(self, name: str) -> None:
        """After a window was replaced or extended wholesale: count it again and trim it."""
        self.kept[name] = sum(map(cost, self.window(name)))
        self._trim(name)

    def _trim(self, name: str) -> None:
        """Drop a window's oldest lines past its bounds, then the biggest window's past the total."""
        lines = self.window(name)
        drop = max(0, len(lines) - MAX_LINES)
        kept = self.kept[name] - sum(map(cost, lines[:drop]))
        while kept > MAX_WINDOW_CHARS and drop < len(lines) - 1:
            kept -= cost(lines[drop])
            drop += 1
        self._drop(name, drop)
        while sum(self.kept.values()) > MAX_TOTAL_CHARS:
            biggest = max(self.kept, key=self.kept.__getitem__)
            if len(self.windows[biggest]) <= 1:
                break
            self._drop(biggest, 1)

    def _drop(self, name: str, count: int) -> None:
        lines = self.windows[name]
        for old in lines[:count]:
            self.kept[name] -= cost(old)
            if old.msg_id is not None and self.by_id.get(old.msg_id) is old:
                del self.by_id[old.msg_id]
        del lines[:count]

    def _here(self, kind: LineKind, text: str) -> None:
        self._append(self.current, Line(kind, self.clock(), sanitize(text)))

    def info(self, text: str) -> None:
        """A neutral line in the current window."""
        self._here("info", text)

    def hint(self, text: str) -> None:
        """A one-line hint: bad input, a failed call."""
        self._here("hint", text)

    def warn(self, text: str) -> None:
        """A line in the warning colour in the current window."""
        self._here("warn", text)

    def say(self, level: Level, text: str) -> None:
        """A line of the command layer's wording at its level."""
        self._here(level, text)

    def switch(self, name: str) -> None:
        """Make ``name`` the current conversation and mark it read."""
        if name == self.current:
            return
        target = self.window(name)
        if self.current == STATUS_WINDOW and not self.left_status:
            # First time off the start screen: the welcome (fingerprint) comes along; a /msg line held stays
            self.left_status = True
            held = set(target)  # Lines compare (and hash) by identity: eq=False
            target[:0] = [line for line in self.windows[STATUS_WINDOW] if line not in held]
            self._recount(name)
        self.current = name
        self.unread.pop(name, None)
        self.generation += 1

    def clear(self) -> None:
        self.windows[self.current] = []
        self.kept[self.current] = 0
        self.generation += 1

    def toggle_raw(self) -> bool:
        self.show_raw = not self.show_raw
        self.generation += 1
        return self.show_raw

    def add_history(self, peer: str, entries: Iterable[HistoryEntry]) -> int:
        """Put persisted history above this session's lines; returns how many were added."""
        lines = self.window(peer)
        seen = {line.msg_id for line in lines if line.msg_id}
        older: list[Line] = []
        for entry in entries:
            if entry.msg_id in seen:
                continue
            own = entry.direction == "out"
            older.append(
                Line(
                    "out" if own else "in",
                    entry.ts / 1000,
                    sanitize(clip(entry.text)),
                    sender=self.own_name if own else entry.sender or entry.peer,  # a room's: its writer
                    msg_id=entry.msg_id,
                    status=entry.status if own else "",
                    server_ts=entry.server_ts / 1000 if entry.server_ts is not None else None,
                )
            )
        if older:
            self.windows[peer] = older + lines
            self._recount(peer)
            for line in older:
                if line.msg_id and line.kind == "out":
                    self.by_id.setdefault(line.msg_id, line)
            self.generation += 1
        return len(older)

    def note_sent(self, msg_id: str, to: str, text: str) -> None:
        """Show an own message the session accepted, if no MessageSent showed it already."""
        if msg_id in self.by_id:
            return
        self._add_own(Line("out", self.clock(), sanitize(clip(text)), self.own_name, msg_id, "sending"), to)

    def _add_own(self, line: Line, to: str) -> None:
        line.to = to
        if line.msg_id:
            self.by_id[line.msg_id] = line
        self._append(to, line)
        if self.current != to:  # /msg from another window: here too, the same object (one status)
            self._append(self.current, line)

    def _incoming(self, peer: str, line: Line) -> None:
        line.sender = one_line(line.sender)
        self._append(peer, line)
        if peer != self.current:
            self.unread[peer] = self.unread.get(peer, 0) + 1

    def unread_summary(self) -> list[tuple[str, int]]:
        return sorted((n, c) for n, c in self.unread.items() if c > 0)

    def retry_in(self) -> int | None:
        if self.retry_at is None:
            return None
        return max(0, int(self.retry_at - self.clock() + 0.999))

    def known_names(self, users: Iterable[str] = ()) -> list[str]:
        """Names for completion: ``users`` (the directory), conversations, key changes, rooms and members."""
        names = set(users) | {w for w in self.windows if w} | set(self.banners) | set(self.rooms) | self.listed
        names.update(*(seats.members for seats in self.rooms.values()))
        names.discard(self.own_name)
        return sorted(names)

    def where(self) -> str:
        """The status bar's conversation: a room with its member count."""
        seats = self.rooms.get(self.current)
        return f"{self.current} ({len(seats.members)})" if seats is not None else self.current

    # --- events ---------------------------------------------------------------

    # size: a match dispatcher over the session's events, one case each
    def apply(self, event: SessionEvent) -> None:  # noqa: C901 - the same dispatcher
        """Fold one session event into the state.

        The front end asks its :class:`~securechat.commands.Executor` first: it
        opens the first conversation and drops repeated key-change alerts.
        """
        match event:
            case MessageReceived(room=str()) | MessageRejected(room=str()) | Acked(member=str()):
                self._room_event(event)
            case RoomChanged() | RoomRejected() | RoomsListed():
                self._room_event(event)
            case Ready(name, fp, new):
                self.own_name, self.fingerprint = name, fp
                if (new or self.first_run) and not self.intro_shown:
                    self.intro_shown = True
                    self.show_intro()
            case ConnectionChanged(state, retry_in, detail):
                self.connection = state
                self.connection_detail = detail
                self.retry_at = self.clock() + retry_in if retry_in is not None else None
            case KeyGenerating(name, bits):
                self.info(wording.key_generating_line(name, bits))
            case MessageSent(msg_id, to, ts, text, payload):
                known = self.by_id.get(msg_id)
                if known is not None:
                    known.payload = kept_payload(payload)
                else:
                    text, payload = sanitize(clip(text)), kept_payload(payload)
                    own = Line("out", ts / 1000, text, self.own_name, msg_id, "sending", payload)
                    self._add_own(own, to)
            case MessageReceived(sender, msg_id, ts, text, payload, server_ts):
                # Dated by the signed time; the server's follows when they are far apart (commands/times.py).
                server = server_ts / 1000 if server_ts is not None else None
                text, payload = sanitize(clip(text)), kept_payload(payload)
                line = Line("in", ts / 1000, text, sender, msg_id, payload=payload, server_ts=server)
                self._incoming(sender, line)
            case MessageRejected(sender, msg_id, reason, detail, payload):
                text = sanitize(wording.rejected_line(sender, reason, detail))
                line = Line("rejected", self.clock(), clip(text), sender, msg_id, payload=kept_payload(payload))
                self._incoming(sender, line)
            case Acked(msg_id, to, status):
                acked = self.by_id.get(msg_id)
                if acked is not None and acked.status != "delivered":  # "delivered" may overtake "queued", never back
                    acked.status, self.generation = status, self.generation + 1
                if status == "undeliverable":  # set aside by the server (docs/protocol.md, "Delivery")
                    self._append(to, Line("warn", self.clock(), wording.undeliverable_line(to), to))
            case KeyChangedAlert(name, _old, _new):
                self.banners[name] = event
                self._append(name, Line("warn", self.clock(), wording.key_changed_line(name), name))
                if self.current != name:
                    self.warn(wording.banner_pointer_line(name))
            case ContactPinned(name, fp, trust):
                if trust != "changed":
                    self.banners.pop(name, None)
                self._append(name, Line("info", self.clock(), wording.pinned_line(name, fp, trust), name))
            case PresenceChanged(name, online):
                if name in self.windows:
                    self._append(name, Line("info", self.clock(), wording.presence_line(name, online), name))
                else:
                    self.generation += 1
            case ErrorReported(code, message, fatal, msg_id, retried):
                sent = self.by_id.get(msg_id) if msg_id else None
                if sent is not None:
                    sent.status = f"{'retrying' if retried else 'failed'}: {code}"
                self.warn(wording.error_line(code, message, fatal))
            case UsersListed():
                self.generation += 1  # shown by the command layer when /users asked for it
            case ServerPinned(server, fp):
                self.info(wording.server_pinned_line(server, fp))
            case ServerRefusedAlert():
                for text in wording.server_refused_lines(event):
                    self.warn(text)

    def _room_event(self, event: SessionEvent) -> None:
        """A room's message, ack, change or refusal, in the room's window (docs/protocol.md 11)."""
        match event:
            case MessageReceived(sender, msg_id, ts, text, payload, server_ts, str(room), gone):
                st = server_ts / 1000 if server_ts is not None else None
                self._incoming(room, Line("in", ts / 1000, sanitize(text), sender, msg_id, payload=payload, server_ts=st))
                if gone:
                    self._append(room, Line("warn", self.clock(), roomwording.readers_gone_line(sender, room, gone)))
            case MessageRejected(sender, msg_id, reason, detail, payload, str(room)):
                text = sanitize(wording.rejected_line(sender, reason, detail) + f" in {room}")
                self._incoming(room, Line("rejected", self.clock(), text, sender, msg_id, payload=payload))
            case Acked(msg_id, room, status, str(member), delivered, total):
                if (acked := self.by_id.get(msg_id)) is not None:  # the counts only grow (client/outbox.py)
                    acked.status, self.generation = room_ack_status(delivered, total, alone=not member), self.generation + 1
                if status == "undeliverable":
                    self._append(room, Line("warn", self.clock(), wording.undeliverable_line(member, room), room))
            case RoomChanged(room, change, members=members, admins=admins):
                self.rooms[room] = Seats(members, admins)
                self._append(room, Line("info", self.clock(), sanitize(roomwording.room_change_line(event)), room))
                if change != "state" and room != self.current:  # a change elsewhere is unread there
                    self.unread[room] = self.unread.get(room, 0) + 1
                if self.own_name not in members:
                    self.rooms.pop(room, None)  # no longer ours: not completed, no count
            case RoomRejected(room):
                self._incoming(room, Line("rejected", self.clock(), sanitize(roomwording.room_rejected_line(event)), room))
            case RoomsListed(listed):
                self.listed = {entry.room for entry in listed if entry.kind == "open"}
                self.info(roomwording.rooms_line(listed))

    def show_intro(self) -> None:
        """First run: the own fingerprint and how to compare it with a contact (each line fits 80 columns)."""
        self.info(f"welcome, {self.own_name}: this is the first session for this name.")
        self.info("your fingerprint (your key's identity, safe to share):")
        for row in fingerprint_rows(self.fingerprint):
            self.info("    " + row)
        self.info("compare fingerprints with a contact over another channel (in")
        self.info("person, by phone): they read out theirs (/fingerprint), you check")
        self.info("it against /whois NAME; if it matches, /verify NAME FINGERPRINT.")
        self.info("/help lists the commands.")
