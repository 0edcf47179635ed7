"""The server's side of rooms (docs/protocol.md 11.6): checked appends, the log, room messages, the list.

:class:`RoomService` acts on :class:`~securechat.server.events.RoomRequest`
events. An entry is checked with the rules every client applies
(:func:`securechat.rooms.log.apply`, the server's member cap) and the signer's
registered key, stored (the store's compare-and-set on ``seq`` decides a
race, between connections or server nodes), answered and pushed to the
members online. A room message is routed to the current members who have a
key in it, each copy exactly like a one-to-one message
(:meth:`~securechat.server.seam.RoomRouting.copy`), then ``room_sent`` and an
``ack`` per member.

Room states are cached here, at most ``ROOM_CACHE`` of them (the store holds
every room). On several nodes a cached state is used only once the room's
``seq`` in the shared store says it is still the newest
(:meth:`~securechat.server.seam.RoomRouting.room_seq`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from .. import jsoncodec
from ..clock import now_ms
from ..crypto import load_public_key_pem
from ..errors import BadRequest, RoomRefused
from ..protocol import HEADER_SIZE, encode_frame, message_frame
from ..relayframes import ack_frame
from ..rooms.frames import ROOM_LIST_PAGE, ROOM_PAGE
from ..rooms.log import RoomEntry, RoomState, apply, parse_entry
from ..rooms.sealing import verify_entry
from .config import ServerConfig
from .directory import Directory
from .events import Deferred, Handled, RoomRequest
from .mailbox import InFlight
from .roomstore import RoomListing, StoredEntry
from .seam import CopyOutcome, RoomRouting
from .sendorder import HELD, SendOrder
from .store import ServerStore

if TYPE_CHECKING:
    from .transport import Peer

log = logging.getLogger("securechat.server")

ROOM_CACHE: Final = 1024
# A page of the log stops early past this many bytes of entries and keys, well inside a client's frame limit.
ROOM_PAGE_BYTES: Final = 512 * 1024
# A room_send takes one frame token per this many recipients (docs/protocol.md 11.6).
RECIPIENTS_PER_TOKEN: Final = 16

_STORE_REFUSALS: Final = {
    "stale": ("stale_state", "someone changed the room first; fetch the log"),
    "exists": ("room_exists", "that room name is taken"),
    "too_many_rooms": ("too_many_rooms", "a room cap is reached (rooms on this server, or rooms per member)"),
}


class RoomService:
    """Rooms on this server: appends, log pages, room messages, listings."""

    def __init__(self, config: ServerConfig, store: ServerStore, directory: Directory, routing: RoomRouting) -> None:
        self._config = config
        self._store = store
        self._directory = directory
        self._routing = routing
        self._cache: OrderedDict[str, RoomState] = OrderedDict()
        routing.after_gap(self.catch_up)

    def handle(self, peer: Peer, request: RoomRequest) -> Handled:
        """Act on one room frame; refusals are raised as :class:`RoomRefused` (the peer gets the code)."""
        if request.kind == "room_send":
            return self._send(peer, request)
        work = {
            "room_create": self._append,
            "room_append": self._append,
            "room_log": self._log,
            "rooms": self._list,
        }[request.kind]
        return work(peer, request)

    # --- states -------------------------------------------------------------------------------

    async def _state(self, room: str, check: Awaitable[int | None] | None = None) -> RoomState | None:
        state = self._cache.get(room)
        if state is not None:
            check = check or self._routing.room_seq(room)
            if check is not None and await check != state.seq:
                state = None  # another node changed the room: read it afresh
        if state is None:
            state = await self._store.room(room)
            if state is None:
                return None
            self._remember(state)
        else:
            self._cache.move_to_end(room)
        return state

    def _remember(self, state: RoomState) -> None:
        self._cache[state.room] = state
        self._cache.move_to_end(state.room)
        while len(self._cache) > ROOM_CACHE:
            self._cache.popitem(last=False)

    async def _pem(self, name: str) -> str | None:
        reg = await self._directory.registration(name)
        return reg.pubkey_pem if reg is not None else None

    # --- appends ------------------------------------------------------------------------------

    async def _append(self, peer: Peer, request: RoomRequest) -> None:
        entry = parse_entry(request.frame["entry"])
        if entry.by != request.sender:
            raise RoomRefused("an entry you send is signed by you", code="bad_entry")
        create = request.kind == "room_create"
        state = await self._state(entry.room)
        if create and state is not None:
            raise RoomRefused(f"{entry.room} exists already", code="room_exists")
        if not create and state is None:
            raise RoomRefused(f"there is no room {entry.room}", code="unknown_room")
        new = apply(state, entry, max_members=self._config.max_room_members)
        if entry.op == "add" and await self._pem(entry.name) is None:
            raise RoomRefused(f"no user named '{entry.name}'", code="unknown_user")
        signer = await self._pem(entry.by)
        if signer is None or not verify_entry(load_public_key_pem(signer), entry):
            raise RoomRefused(f"the entry's signature does not verify with the key of '{entry.by}'", code="bad_entry")
        text = jsoncodec.dumps(entry.to_json()).decode("utf-8")
        stored = StoredEntry(entry.room, entry.seq, entry.op, entry.name, new.head, text, entry.kind)
        result = await (self._store.room_create(stored) if create else self._store.room_append(stored))
        if result != "ok":
            self._cache.pop(entry.room, None)  # another writer won: read the room afresh next time
            code, why = _STORE_REFUSALS[result]
            raise RoomRefused(why, code=code)
        self._remember(new)
        await self._announce(peer, request, entry, new)

    async def _announce(self, peer: Peer, request: RoomRequest, entry: RoomEntry, new: RoomState) -> None:
        keys = {name: pem for name in {entry.by, entry.name} if (pem := await self._pem(name)) is not None}
        update = {"type": "room_update", "room": entry.room, "entries": [entry.to_json()], "keys": keys, "more": False}
        peer.answer(dict(update), request.rid)
        self._routing.told(peer, entry.room, entry.seq)
        told = set(new.members) | ({entry.name} if entry.op == "remove" else set())
        self._routing.push(sorted(told - {request.sender}), entry.room, entry.seq, encode_frame(update))

    # --- the log --------------------------------------------------------------------------------

    async def _log(self, peer: Peer, request: RoomRequest) -> None:
        room: str = request.frame["room"]
        state = await self._state(room)
        if state is None:
            raise RoomRefused(f"there is no room {room}", code="unknown_room")
        update = await self._page(request.sender, state, request.frame.get("since", 0))
        if update["entries"] and (request.sender in state.members or state.kind != "open"):  # not an open room's reader
            self._routing.told(peer, room, update["entries"][-1]["seq"])
        peer.answer(update, request.rid)

    async def _page(self, name: str, state: RoomState, since: int) -> dict[str, Any]:
        """The ``room_update`` page of ``state``'s log from ``since`` that ``name`` may read (else ``not_member``)."""
        room, until = state.room, state.seq
        if name not in state.members and state.kind != "open":
            left = await self._store.room_left(room, name)
            if left is None:
                raise RoomRefused(f"you are not a member of {room}", code="not_member")
            until = left  # a former member reads up to the entry that ended their membership
        texts = await self._store.room_log(room, since, until, ROOM_PAGE)
        entries: list[dict[str, Any]] = []
        keys: dict[str, str] = {}
        size = 0
        for text in texts:
            entry = jsoncodec.loads(text.encode("utf-8"))
            for who in (entry["by"], entry["name"]):
                if who not in keys and (pem := await self._pem(who)) is not None:
                    keys[who] = pem
                    size += len(pem)
            entries.append(entry)
            size += len(text)
            if size > ROOM_PAGE_BYTES:
                break
        more = bool(entries) and entries[-1]["seq"] < until
        return {"type": "room_update", "room": room, "entries": entries, "keys": keys, "more": more}

    async def catch_up(self, peer: Peer, name: str, told: Mapping[str, int]) -> None:
        """After a gap of the pokes (several nodes): push to ``name``'s session each room's entries that
        followed what it was sent (``told``). The log is the truth; an entry it has already is a replay the
        client drops, and a room it does not hold yet is pushed from the entries that end the log, which hold
        its ``add`` (docs/deployment.md, "Rooms on Redis")."""
        try:
            rooms = set(told) | {r.room for r in await self._member_rooms(name)}
            for room in sorted(rooms):
                state = await self._state(room)
                if state is not None and not peer.closing:
                    await self._push_since(peer, name, state, told[room] + 1 if room in told else None)
        except (ConnectionError, OSError) as exc:  # the store went away again: the next gap retries
            log.debug("catching up the rooms of %s stopped: %s", name, exc)

    async def _push_since(self, peer: Peer, name: str, state: RoomState, since: int | None) -> None:
        """Push ``state``'s entries from ``since`` (None: the last page's) to ``peer``, page by page."""
        since = max(0, state.seq - ROOM_PAGE + 1) if since is None else since
        while since <= state.seq and not peer.closing:
            try:
                update = await self._page(name, state, since)
            except RoomRefused:  # no longer a reader of this room (an open room's log it read once)
                return
            if not update["entries"]:
                return
            peer.write(encode_frame(update))
            since = update["entries"][-1]["seq"] + 1
            self._routing.told(peer, state.room, since - 1)
            if not update["more"]:
                return

    async def _member_rooms(self, name: str) -> list[RoomListing]:
        """Every room ``name`` is a member of, page by page."""
        out: list[RoomListing] = []
        after = ""
        while True:
            rows = await self._store.rooms_page(name, after, ROOM_LIST_PAGE)
            out += [r for r in rows if r.member]
            if len(rows) < ROOM_LIST_PAGE:
                return out
            after = rows[-1].room

    async def _list(self, peer: Peer, request: RoomRequest) -> None:
        rows = await self._store.rooms_page(request.sender, request.frame.get("after", ""), ROOM_LIST_PAGE + 1)
        for r in rows[:ROOM_LIST_PAGE]:
            if r.member:
                self._routing.told(peer, r.room, r.seq)
        listed = [
            {"room": r.room, "kind": r.kind, "member": r.member, "members": r.members, "seq": r.seq,
             "head": r.head.hex()}
            for r in rows[:ROOM_LIST_PAGE]
        ]
        peer.answer({"type": "room_list", "rooms": listed, "more": len(rows) > ROOM_LIST_PAGE}, request.rid)

    # --- room messages ------------------------------------------------------------------------------

    def _send(self, peer: Peer, request: RoomRequest) -> Handled:
        envelope: dict[str, Any] = request.frame["envelope"]
        if envelope["from"] != request.sender:
            raise BadRequest("envelope 'from' is not your name")
        room: str = request.frame["room"]
        order = self._routing.order(peer)  # one order for the session's sends, room and one-to-one
        if order is not None and not order.admit((room, envelope["id"])):
            peer.error(*HELD, request.rid)
            return None
        state = self._cache.get(room)
        check = None
        if state is not None and (envelope["seq"], envelope["head"]) == (state.seq, state.head.hex()):
            check = self._routing.room_seq(room)
            if check is None:
                return self._route(peer, request, state, order)  # the common case on one node: no store round trip
        return self._send_checked(peer, request, check, order)

    async def _send_checked(
        self, peer: Peer, request: RoomRequest, check: Awaitable[int | None] | None, order: SendOrder | None
    ) -> None:
        room: str = request.frame["room"]
        envelope: dict[str, Any] = request.frame["envelope"]
        try:
            state = await self._state(room, check)
            if state is None:
                raise RoomRefused(f"there is no room {room}", code="unknown_room")
            seq: int = envelope["seq"]
            known = state.head if seq == state.seq else await self._store.room_head(room, seq) if seq < state.seq else None
        except ConnectionError:
            if order is not None:
                order.failed((room, envelope["id"]))  # the later sends wait for its resend
            raise
        if known is None or known.hex() != envelope["head"]:
            raise RoomRefused(f"the message's state (seq {seq}) is not in the log of {room}", code="stale_state")
        pending = self._route(peer, request, state, order)
        if isinstance(pending, Deferred):
            await pending.awaitable

    def _route(self, peer: Peer, request: RoomRequest, state: RoomState, order: SendOrder | None) -> Deferred | None:
        """Hand the message to the members online, store it for the others; ``room_sent`` once stored."""
        envelope: dict[str, Any] = request.frame["envelope"]
        sender, room, msg_id = request.sender, state.room, envelope["id"]
        if sender not in state.members:
            raise RoomRefused(f"you are not a member of {room}", code="not_member")
        server_ts = now_ms()
        frame = message_frame(sender, server_ts, envelope, room)
        if len(frame) - HEADER_SIZE > self._config.deliverable_frame:
            # The members would have to refuse this frame (docs/protocol.md, "Delivery").
            limit = self._config.deliverable_frame
            text = f"as a 'message' frame this would be {len(frame) - HEADER_SIZE} bytes; the limit is {limit}"
            raise BadRequest(text, code="message_too_large")
        recipients = sorted((state.members & envelope["keys"].keys()) - {sender})
        extra = max(0, math.ceil(len(recipients) / RECIPIENTS_PER_TOKEN) - 1)
        if extra and not peer.conn.charge(extra):
            raise BadRequest(f"a message to {len(recipients)} members costs {extra + 1} frames", code="rate_limited")
        now = time.time()
        copies = [
            (name, self._routing.copy(peer, name, InFlight(sender, msg_id, server_ts, frame, len(frame), now, False,
                                                           request.rid, room)))
            for name in recipients  # each member's mailbox holds its own entry (it marks it stored, drops its frame)
        ]
        stored = [outcome for _, outcome in copies if not isinstance(outcome, str)]
        if not stored:
            self._tell(peer, request, state, [(name, str(outcome)) for name, outcome in copies])
            return None
        if order is not None:  # one copy failed: the message failed, and the session's later sends wait for it
            order.track((room, msg_id), asyncio.gather(*stored))
        return Deferred(self._after_stored(peer, request, state, copies))

    async def _after_stored(
        self, peer: Peer, request: RoomRequest, state: RoomState,
        copies: Sequence[tuple[str, CopyOutcome | Awaitable[CopyOutcome]]],
    ) -> None:
        self._tell(peer, request, state, [(name, o if isinstance(o, str) else await o) for name, o in copies])

    def _tell(self, peer: Peer, request: RoomRequest, state: RoomState, outcomes: Iterable[tuple[str, str]]) -> None:
        """``room_sent`` (who has it, whose queue is full), then the acks due now: ``queued``, or a resend's ``delivered``."""
        msg_id: str = request.frame["envelope"]["id"]
        done = sorted(outcomes)
        members = [name for name, outcome in done if outcome != "full"]
        full = [name for name, outcome in done if outcome == "full"]
        peer.answer(_sent(state.room, msg_id, members, full, state.seq), request.rid)
        for name, outcome in done:
            if outcome in ("queued", "delivered"):
                peer.write(ack_frame(msg_id, state.room, outcome, request.rid, member=name))


def _sent(room: str, msg_id: str, members: list[str], full: list[str], seq: int) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "room_sent", "room": room, "id": msg_id, "members": members, "seq": seq}
    if full:
        frame["full"] = full
    return frame
