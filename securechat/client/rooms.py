"""The client's side of rooms (docs/protocol.md 11.7): verified state, changes, fetches, sync.

:class:`RoomClient` is the session's :class:`~securechat.events.RoomAPI`. It
holds each room's verified chain (:class:`~securechat.client.roomchains.RoomChains`)
and moves it only forward: every entry that arrives (an answer, a push, a page of
the log) is checked on the held head with the signer's *pinned* key and the
rules every client and the server apply (:func:`securechat.rooms.log.apply`).
A refused entry stops the chain there and is told as
:class:`~securechat.events.RoomRejected` (a second entry at a held ``seq`` is a
fork: the first view is kept). Keys that come with the log are pinned on first
sight; a key that differs from a pin raises the usual alarm and is not used.

A change is built on the held head, checked here first (a refused command is
never sent), signed, sent and answered; ``stale_state`` means someone changed
the room first: fetch, then try again. After every ``welcome``, :meth:`sync`
lists the rooms and fetches what changed meanwhile. One lock keeps every chain
change in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from ..clock import now_ms
from ..errors import RoomRefused, SecurechatError, ServerErrorReply, SessionClosed
from ..events import RoomChanged, RoomListing, RoomRejected, RoomsListed
from ..names import parse_typed_name, parse_typed_room
from ..rooms.log import CHANGES, MAX_MEMBER_ROOMS, ZERO_HEAD, RoomEntry, RoomState, apply, parse_entry
from ..rooms.sealing import sign_entry, verify_entry
from .connection import RoomFrame
from .link import Link
from .parts import SessionParts
from .requests import PendingRequests

log = logging.getLogger(__name__)

# How often a change is rebuilt on a fresher head after stale_state.
CHANGE_ATTEMPTS: Final = 3
# Pages of `rooms` read at most (200 each).
MAX_LIST_PAGES: Final = 50

Connection = Callable[[float], Awaitable[Link]]


class RoomClient:
    """One identity's rooms over one session; see the module docstring."""

    def __init__(
        self, parts: SessionParts, requests: PendingRequests, connection: Connection, timeout: float
    ) -> None:
        self._parts = parts
        self._chains = parts.store.rooms
        self._me = parts.identity.name
        self._requests = requests
        self._connection = connection
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self._told: set[str] = set()  # rooms whose state was told this session (the "state" event)

    # --- RoomAPI --------------------------------------------------------------------------------

    async def create(self, room: str, open_room: bool) -> None:
        await self._change("create", parse_typed_room(room), self._me, "open" if open_room else "invite")

    async def join(self, room: str) -> None:
        await self._change("join", parse_typed_room(room), self._me)

    async def add(self, room: str, name: str) -> None:
        await self._change("add", parse_typed_room(room), parse_typed_name(name))

    async def remove(self, room: str, name: str) -> None:
        await self._change("remove", parse_typed_room(room), parse_typed_name(name))

    async def admin(self, room: str, name: str) -> None:
        await self._change("admin", parse_typed_room(room), parse_typed_name(name))

    async def leave(self, room: str) -> None:
        await self._change("leave", parse_typed_room(room), self._me)

    def state(self, room: str) -> RoomState | None:
        return self._chains.state(parse_typed_room(room))

    def held(self) -> list[RoomState]:
        return self._chains.states()

    async def list_rooms(self) -> None:
        listed = await self._list_all()
        rooms = (RoomListing(r["room"], r["kind"], r["member"], r["members"]) for r in listed)
        self._parts.emit(RoomsListed(tuple(rooms)))

    # --- what the session and the inbox call ------------------------------------------------------

    async def on_push(self, frame: RoomFrame) -> None:
        """A ``room_update`` nobody asked for: someone changed a room we are in (or added us to one)."""
        room: str = frame.frame["room"]
        try:
            async with self._lock:
                if self._chains.state(room) is None:
                    if not any(e.get("op") == "add" and e.get("name") == self._me for e in frame.frame["entries"]):
                        return  # not a room of ours: nothing to hold
                    if self._member_rooms() >= MAX_MEMBER_ROOMS:
                        self._refuse(room, "too_many_rooms", f"we are in {MAX_MEMBER_ROOMS} rooms already")
                        return
                    await self._fetch(room, 0)  # we were added: learn the room from its start
                    return
                gap = await self._apply(room, frame.frame)
                if gap is not None:
                    await self._fetch(room, gap)
        except SecurechatError as exc:  # offline meanwhile, or the server refused: the next sync catches up
            log.info("room update for %s not applied: %s", room, exc)

    async def sync(self) -> None:
        """After ``welcome``: fetch what changed in our rooms meanwhile; tell each room's state once."""
        asked = {state.room for state in self._chains.states()}  # a room made while the list travels is not in it
        try:
            listed = {item["room"]: item for item in await self._list_all()}
        except SecurechatError as exc:  # offline again, or a server without rooms: the next welcome tries again
            log.info("could not list the rooms: %s", exc)
            return
        async with self._lock:
            for room, item in sorted(listed.items()):
                if item["member"]:
                    await self._catch_up(room, item)
            for held in self._chains.states():
                if held.room in asked and self._me in held.members and not listed.get(held.room, {}).get("member", False):
                    await self._learn_why_out(held)
        for state in self._chains.states():
            if state.room not in self._told:
                self._told.add(state.room)
                self._tell(state, "state", None, None)

    async def state_for(self, room: str, seq: int, head: bytes) -> RoomState | None:
        """The held state a message names (fetching the log first if it is ahead of us), or None."""
        found = self._chains.state_at(room, seq, head)
        held = self._chains.state(room)
        if found is not None or (held is not None and seq <= held.seq):
            return found
        try:
            async with self._lock:
                try:
                    await self._fetch(room, held.seq + 1 if held else 0)
                    found = self._chains.state_at(room, seq, head)
                finally:
                    if held is None:
                        self._keep_only_as_member(room)
        except SessionClosed:
            raise  # the log could not be read for now: the message stays unconfirmed, redelivered later
        except SecurechatError as exc:
            log.info("could not fetch %s for a message: %s", room, exc)
        return found

    async def refresh(self, room: str, seq: int) -> None:
        """The server says ``room`` is at ``seq``: fetch it if we are behind."""
        held = self._chains.state(room)
        if held is not None and seq > held.seq:
            try:
                async with self._lock:
                    await self._fetch(room, held.seq + 1)
            except SecurechatError as exc:  # the next sync catches up
                log.info("could not fetch %s: %s", room, exc)

    def _keep_only_as_member(self, room: str) -> None:
        """A room read for a message or a join that we are not in (an open room's log is anyone's to
        read): not held, so no server can fill our state with logs of rooms we never joined."""
        state = self._chains.state(room)
        if state is not None and self._me not in state.members:
            self._chains.forget(room)
            self._told.discard(room)

    # --- changes --------------------------------------------------------------------------------

    async def _change(self, op: str, room: str, name: str, kind: str = "") -> None:
        async with self._lock:
            held = self._chains.state(room) is not None
            try:
                await self._change_held(op, room, name, kind)
            finally:
                if op == "join" and not held:  # a join that did not happen leaves nothing held
                    self._keep_only_as_member(room)

    async def _change_held(self, op: str, room: str, name: str, kind: str) -> None:
        """:meth:`_change` with the lock held."""
        for attempt in range(CHANGE_ATTEMPTS):
            state = self._chains.state(room)
            if state is None and op == "join":
                await self._fetch_to_join(room)
                state = self._chains.state(room)
            if state is None and op != "create":
                raise RoomRefused(f"there is no room {room} here (/rooms lists them)", code="unknown_room")
            if op in ("create", "add", "join") and self._member_rooms() >= MAX_MEMBER_ROOMS and name == self._me:
                raise RoomRefused(f"you are in {MAX_MEMBER_ROOMS} rooms already", code="too_many_rooms")
            seq, prev = (state.seq + 1, state.head) if state is not None else (0, ZERO_HEAD)
            entry = sign_entry(self._parts.identity.private_key, room, seq, prev, op, self._me, name, kind, now_ms())
            apply(state, entry)  # the rules, here first: a refused change is never sent
            kind_of = "room_create" if op == "create" else "room_append"
            try:
                answer = await self._ask({"type": kind_of, "entry": entry.to_json()}, "room", room)
            except ServerErrorReply as exc:
                if exc.code != "stale_state" or attempt == CHANGE_ATTEMPTS - 1:
                    raise
                await self._fetch(room, seq)  # someone changed it first: catch up, then build it again
                continue
            await self._apply(room, answer.frame)
            return

    async def _fetch_to_join(self, room: str) -> None:
        """Read the log of an open room we do not hold yet; the server reads an invite room's only to
        its members and former members (docs/protocol.md 11.6), so its ``not_member`` says which."""
        try:
            await self._fetch(room, 0)
        except ServerErrorReply as exc:
            if exc.code != "not_member":
                raise
            raise RoomRefused(f"{room} is an invite room: its admins add members (/join is for open rooms)",
                              code="not_member") from None

    # --- fetching and verifying -------------------------------------------------------------------

    async def _ask(self, frame: Mapping[str, Any], kind: str, name: str | None) -> RoomFrame:
        link = await self._connection(self._timeout)
        answer: RoomFrame = await self._requests.ask(link, frame, kind, name, self._timeout)
        return answer

    async def _fetch(self, room: str, since: int) -> None:
        """Read the log from ``since`` on, page by page, applying each (the lock is held)."""
        while True:
            answer = await self._ask({"type": "room_log", "room": room, "since": since}, "room", room)
            await self._apply(room, answer.frame)
            held = self._chains.state(room)
            following = held.seq + 1 if held is not None else 0
            if not answer.frame["more"] or following <= since:
                return  # the end, or nothing applied (refused, told): do not ask again
            since = following

    async def _apply(self, room: str, frame: Mapping[str, Any]) -> int | None:
        """Verify a page of entries on the held head and keep what passes; the ``seq`` to fetch from on a gap."""
        if frame.get("room") != room:
            return None
        for name, pem in frame["keys"].items():
            self._parts.contacts.bundled(name, pem)
        state = self._chains.state(room)
        accepted: list[tuple[RoomEntry, RoomState]] = []
        gap = None
        for raw in frame["entries"]:
            try:
                verdict = await self._verify(room, state, raw, accepted)
            except RoomRefused as exc:
                self._refuse(room, exc.code, exc.detail, raw.get("seq") if isinstance(raw, dict) else None)
                break
            if isinstance(verdict, int):
                gap = verdict
                break
            if verdict is not None:
                state = verdict[1]
                accepted.append(verdict)
        if accepted and state is not None:
            self._told.difference_update(self._chains.extend(state, [entry for entry, _ in accepted]))
            for entry, after in accepted:
                self._told.add(room)
                self._tell(after, CHANGES[entry.op], entry.name, entry.by)
        return gap

    async def _verify(
        self, room: str, state: RoomState | None, raw: object, accepted: list[tuple[RoomEntry, RoomState]]
    ) -> tuple[RoomEntry, RoomState] | int | None:
        """One entry: the new (entry, state), None for a replay, the ``seq`` of a gap; raise if refused."""
        entry = parse_entry(raw)
        if entry.room != room:
            raise RoomRefused(f"an entry of {entry.room} in the log of {room}", code="bad_entry")
        top = state.seq if state is not None else -1
        if entry.seq <= top:
            known = next((e.head() for e, _ in accepted if e.seq == entry.seq), None)
            if (known or self._chains.head_at(room, entry.seq)) == entry.head():
                return None  # a replay of what we hold
            raise RoomRefused(
                f"two different entries claim seq {entry.seq} of {room}: the server shows members different "
                "logs (a fork); the first one seen is kept", code="fork",
            )
        if entry.seq > top + 1:
            return top + 1
        pin = self._parts.contacts.pinned(entry.by)
        if pin is None:
            await self._parts.lookup(entry.by)
            pin = self._parts.contacts.pinned(entry.by)
        if pin is None:
            raise RoomRefused(f"no key for {entry.by}, who signed seq {entry.seq}", code="unknown_sender")
        if pin.trust == "changed":
            raise RoomRefused(f"the key of {entry.by} changed: trust or verify it first", code="key_changed")
        if not verify_entry(pin.public_key(), entry):
            raise RoomRefused(f"seq {entry.seq} is not signed by the pinned key of {entry.by}", code="bad_signature")
        return entry, apply(state, entry)

    # --- sync -------------------------------------------------------------------------------------

    async def _list_all(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        after: dict[str, str] = {}
        for _ in range(MAX_LIST_PAGES):
            answer = await self._ask({"type": "rooms", **after}, "rooms", None)
            items += answer.frame["rooms"]
            if not answer.frame["more"] or not answer.frame["rooms"]:
                break
            after = {"after": answer.frame["rooms"][-1]["room"]}
        return items

    async def _catch_up(self, room: str, item: Mapping[str, Any]) -> None:
        held = self._chains.state(room)
        try:
            if held is None:
                if self._member_rooms() < MAX_MEMBER_ROOMS:
                    await self._fetch(room, 0)
            elif item["seq"] > held.seq:
                await self._fetch(room, held.seq + 1)
            elif item["seq"] == held.seq and item["head"] != held.head.hex():
                self._refuse(room, "fork", f"the server lists another head for seq {held.seq} of {room}", held.seq)
        except SecurechatError as exc:
            log.info("could not catch up with %s: %s", room, exc)

    async def _learn_why_out(self, held: RoomState) -> None:
        """The server no longer lists us in a room we hold: its log should show a signed removal."""
        try:
            await self._fetch(held.room, held.seq + 1)
        except SecurechatError as exc:
            log.info("could not read %s: %s", held.room, exc)
        now = self._chains.state(held.room)
        if now is not None and self._me in now.members:
            self._refuse(
                held.room, "withheld",
                f"the server lists you as out of {held.room} but shows no signed change: you keep your view",
            )

    # --- events -----------------------------------------------------------------------------------

    def _member_rooms(self) -> int:
        return sum(1 for state in self._chains.states() if self._me in state.members)

    def _tell(self, state: RoomState, change: str, name: str | None, by: str | None) -> None:
        self._parts.emit(RoomChanged(
            state.room, change, name, by, tuple(sorted(state.members)), tuple(sorted(state.admins)), state.seq,
            state.kind,
        ))

    def _refuse(self, room: str, reason: str, detail: str, seq: object = None) -> None:
        self._parts.emit(RoomRejected(room, reason, detail, seq if isinstance(seq, int) else None))
