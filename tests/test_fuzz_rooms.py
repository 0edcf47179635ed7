"""Fuzzing the rooms where bytes from outside meet a client (issue 10; docs/protocol.md 11.7).

The frames' schemas, ``parse_entry`` and ``check_room_envelope`` have their own
property tests (tests/test_room_frames.py, test_room_log.py, test_room_sealing.py);
here the targets are whole paths, each with an invariant that can fail:

* the client's log parser: ``room_update`` pushes built from a genuine chain
  (genuine entries in any order, entries with a field changed, entries really
  signed by someone, a member's key swapped in ``keys``, junk) go through the
  client's frame check and :meth:`RoomClient.on_push`. Whatever comes, the held
  chain keeps its genuine prefix, never moves back, stays contiguous, every held
  entry verifies with the *genuine* key of its signer and the rules replay it to
  the held state, the pins never change, and every refusal is a ``RoomRejected``
  with a reason of section 11.7/11.8;
* room envelopes at the receiver: a genuine envelope with fields changed, bits
  flipped, keys dropped, added or swapped is refused with a reason of the table
  in 11.7, or (when the change touched nothing signed) opens to exactly what
  the sender sealed;
* pasted room payloads (``decrypt``): random text and mutated payloads are refused
  with an :class:`EnvelopeRejected`, never anything else.

The live server's room handlers are fuzzed in tests/test_attacks_fuzz.py (room
frames of every type, and room frames mutated from genuine ones). The ``ci``
profile runs each quickly; ``tools/fuzz.sh`` runs them with ``fuzz``.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securechat import crypto
from securechat.client.connection import RoomFrame
from securechat.client.contacts import Contacts
from securechat.client.decrypting import open_pasted
from securechat.client.parts import SessionParts
from securechat.client.requests import PendingRequests
from securechat.client.roomchains import RoomChains
from securechat.client.rooms import RoomClient
from securechat.client.state import ClientStore
from securechat.encoding import b64decode, b64encode
from securechat.errors import EnvelopeRejected, ProtocolError, ServerErrorReply, SessionClosed
from securechat.events import RoomRejected
from securechat.protocol import validate_server_frame
from securechat.records import ContactInfo
from securechat.rooms.log import RoomEntry, RoomState, apply, parse_entry, replay
from securechat.rooms.sealing import open_room_envelope, seal_room, sign_entry, verify_entry
from tests.support.rooms import T0, chain, key_of
from tests.support.strategies import anything

pytestmark = pytest.mark.timeout(1800)

ROOM = "#ops"
ME = "erin"
SIGNERS = ("alice", "bob", "carol")
PEOPLE = ("alice", "bob", "carol", "dave", "erin", "mallory")
# Refusals of a change (docs/protocol.md 11.7 "Verifying entries", 11.8).
ROOM_REASONS = frozenset({
    "bad_entry", "fork", "unknown_sender", "key_changed", "bad_signature", "not_allowed", "not_member",
    "room_full", "stale_state", "unknown_room", "room_exists", "too_many_rooms",
})
# The reasons of the table in 11.7 (checks 0 to 12).
ENVELOPE_REASONS = frozenset({
    "malformed", "bad_version", "room_mismatch", "sender_mismatch", "unknown_state", "not_member",
    "bad_recipient", "member_mismatch", "unknown_sender", "key_changed", "bad_signature", "unwrap_failed",
    "decrypt_failed", "bad_plaintext",
})


def pem(name: str) -> str:
    return crypto.public_key_pem(key_of(name).public_key())


# The genuine room: alice creates it, adds erin (the client under test) and bob, makes bob an admin;
# bob adds carol and dave, removes carol; alice leaves.
GENUINE = chain(
    ("add", "alice", "erin"), ("add", "alice", "bob"), ("admin", "alice", "bob"), ("add", "bob", "carol"),
    ("add", "bob", "dave"), ("remove", "bob", "carol"), ("leave", "alice"),
)
HEADS = [entry.head() for entry in GENUINE.entries]
LAST = len(GENUINE.entries) - 1


@dataclass
class World:
    store: ClientStore


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    store = ClientStore.open(tmp_path_factory.mktemp("fuzzrooms"), ME, bits=2048)
    try:
        yield World(store)
    finally:
        store.close()


# --- the client's log parser ---------------------------------------------------------------------


def _mutated(entry: RoomEntry, field: str, value: Any) -> dict[str, Any]:
    raw = entry.to_json()
    raw[field] = value
    return raw


def _signed(signer: str, seq: int, on_genuine: bool, op: str, by: str, name: str, kind: str) -> dict[str, Any]:
    prev = HEADS[seq - 1] if on_genuine and 0 < seq <= len(HEADS) else bytes(32)
    return sign_entry(key_of(signer), ROOM, seq, prev, op, by, name, kind if op == "create" else "", T0 + seq).to_json()


FIELD_VALUES = st.one_of(
    anything, st.sampled_from(PEOPLE), st.integers(-1, LAST + 2), st.sampled_from(["#dev", ROOM]),
    st.sampled_from([h.hex() for h in HEADS]), st.sampled_from(["add", "remove", "join", "leave", "admin"]),
    st.integers(T0, T0 + 99),
)
ENTRY_FIELDS = st.sampled_from(["room", "seq", "prev", "op", "by", "name", "kind", "ts", "sig", "extra"])
# Keys that come with a page: the genuine ones, a member's key swapped for mallory's, mallory's own, junk.
BUNDLED = st.dictionaries(
    st.sampled_from(PEOPLE), st.one_of(st.sampled_from(PEOPLE).map(pem), st.text(max_size=20)), max_size=3
)


def entry_lists(held: int) -> st.SearchStrategy[list[Any]]:
    """Entries anywhere in the chain, and more of them at the seq after the held head (where a forgery
    would be applied): genuine, with a field changed, really signed by someone, junk."""
    anywhere = st.integers(0, LAST)
    after = st.just(min(LAST, held + 1))

    def mutated(index: st.SearchStrategy[int]) -> st.SearchStrategy[dict[str, Any]]:
        return st.builds(_mutated, index.map(lambda i: GENUINE.entries[i]), ENTRY_FIELDS, FIELD_VALUES)

    def signed(seq: st.SearchStrategy[int], on_genuine: st.SearchStrategy[bool]) -> st.SearchStrategy[dict[str, Any]]:
        return st.builds(
            _signed, st.sampled_from([*SIGNERS, "mallory"]), seq, on_genuine,
            st.sampled_from(["create", "add", "remove", "join", "leave", "admin"]),
            st.sampled_from(PEOPLE), st.sampled_from(PEOPLE), st.sampled_from(["invite", "open"]),
        )

    return st.lists(
        st.one_of(
            anywhere.map(lambda i: GENUINE.entries[i].to_json()),
            after.map(lambda i: GENUINE.entries[i].to_json()),
            mutated(anywhere), mutated(after), mutated(after),
            signed(st.integers(0, LAST + 2), st.booleans()), signed(after, st.just(True)),
            signed(after, st.just(True)),
            st.dictionaries(st.text(max_size=5), anything),
        ),
        min_size=1,
        max_size=6,
    )


@functools.cache
def _updates(held: int) -> st.SearchStrategy[dict[str, Any]]:
    """The ``room_update`` frames for a client holding ``held``: built once per seq (a strategy built
    inside each draw is validated again on each, which was a third of this target's time)."""

    def update(room: Any, entries: Any, keys: Any, more: Any) -> st.SearchStrategy[dict[str, Any]]:
        return st.builds(lambda *v: dict(zip(("type", "room", "entries", "keys", "more"), v, strict=True)),
                         st.just("room_update"), room, entries, keys, more)

    genuine_shape = update(st.sampled_from([ROOM, ROOM, ROOM, "#dev"]), entry_lists(held), BUNDLED, st.booleans())
    junk = update(anything, entry_lists(held) | anything, BUNDLED | anything, anything)
    return st.one_of(genuine_shape, genuine_shape, genuine_shape, junk)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, list[Any]]:
    """The seq the client holds, then the ``room_update`` frames a server pushes."""
    held = draw(st.integers(1, LAST - 1))
    return held, draw(st.lists(_updates(held), min_size=1, max_size=4))


def _reset(store: ClientStore, held: int) -> None:
    """The store as after verifying the genuine chain up to ``held``, with the genuine signers pinned."""
    with store.transaction() as db:
        db.execute("DELETE FROM room_chain")
        db.execute("DELETE FROM room_state")
        db.execute("DELETE FROM contacts")
    for name in SIGNERS:
        store.pins.pin(name, pem(name))
    store.rooms = RoomChains(store)  # a fresh cache of rebuilt states too
    state = None
    for entry in GENUINE.entries[: held + 1]:
        state = apply(state, entry)
    assert state is not None
    store.rooms.extend(state, GENUINE.entries[: held + 1])


def _room_client(store: ClientStore, events: list[object]) -> RoomClient:
    contacts = Contacts(store, events.append)

    async def lookup(name: str) -> ContactInfo:
        if name in PEOPLE:  # the server presents each registered user's own key
            return contacts.presented(name, pem(name))
        raise ServerErrorReply("unknown_user", f"no user {name}")

    async def offline(timeout: float) -> Any:
        raise SessionClosed("not connected (a gap is fetched at the next welcome)")

    parts = SessionParts(store, store.require_identity(), contacts, events.append, lookup)
    return RoomClient(parts, PendingRequests(), offline, 1.0)


def _check_held_chain(store: ClientStore, held: int) -> None:
    entries = store.rooms.entries(ROOM)
    assert [e.to_json() for e in entries[: held + 1]] == [e.to_json() for e in GENUINE.entries[: held + 1]]
    assert [e.seq for e in entries] == list(range(len(entries)))
    state: RoomState | None = None
    for entry in entries:
        assert verify_entry(key_of(entry.by).public_key(), entry), f"seq {entry.seq} is not signed by {entry.by}"
        state = apply(state, entry)
    assert state == store.rooms.state(ROOM)
    for name in SIGNERS:
        pin = store.pins.get(name)
        assert pin is not None and pin.pubkey == pem(name), f"the pin of {name} moved"


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(scenario=scenarios())
def test_random_room_updates_keep_the_held_chain_genuine(world: World, scenario: tuple[int, list[Any]]) -> None:
    held, pushes = scenario
    store = world.store
    _reset(store, held)
    events: list[object] = []
    client = _room_client(store, events)

    async def push_all() -> None:
        for frame in pushes:
            try:
                validate_server_frame(frame)  # what the client's connection checks first
            except ProtocolError as exc:
                assert (exc.code, exc.fatal) == ("bad_request", False), exc
                continue  # dropped with a notice, as ClientConnection does
            await client.on_push(RoomFrame("room_update", frame))

    asyncio.run(push_all())
    _check_held_chain(store, held)
    grew = store.rooms.state(ROOM).seq > held  # type: ignore[union-attr]
    hypothesis.event("the held chain grew" if grew else "the held chain stayed")
    for event in events:
        if isinstance(event, RoomRejected):
            hypothesis.event(f"refused: {event.reason}")
            assert event.room == ROOM and event.reason in ROOM_REASONS, event


def test_the_log_parser_target_can_tell_a_forged_chain() -> None:
    """The invariant above is not vacuous: a chain extended by an entry whose signer is not its ``by`` fails it."""
    forged = sign_entry(key_of("mallory"), ROOM, 3, HEADS[2], "add", "alice", "mallory", "", T0)
    assert not verify_entry(key_of("alice").public_key(), forged)
    assert parse_entry(forged.to_json()) == forged


# --- room envelopes at the receiver --------------------------------------------------------------

# The state after seq 2 (alice, erin, bob): what the sealed message names.
STATE = replay(GENUINE.entries, upto=2)
assert STATE is not None
MEMBERS = tuple(sorted(STATE.members))
TEXT = "the genuine text"


def _member_keys(store: ClientStore) -> dict[str, crypto.PublicKey]:
    return {"alice": key_of("alice").public_key(), "bob": key_of("bob").public_key(),
            ME: store.require_identity().private_key.public_key()}


@pytest.fixture(scope="module")
def sealed(world: World) -> dict[str, Any]:
    return seal_room(key_of("alice"), _member_keys(world.store), STATE, "alice", TEXT, msg_id="ab" * 16, ts=T0)


def _flip(value: str, at: int) -> str:
    raw = bytearray(b64decode(value))
    if raw:
        raw[at % len(raw)] ^= 1 << (at % 8)
    return b64encode(bytes(raw))


def _mutate(env: dict[str, Any], how: tuple[str, str, Any]) -> None:
    """Apply one change; one that no longer fits (its field gone or replaced by an earlier one) does nothing."""
    kind, field, value = how
    keys = env.get("keys")
    if kind == "set":
        env[field] = value
    elif kind == "drop":
        env.pop(field, None)
    elif kind == "flip":
        holder, at = (env, field) if field in ("nonce", "ct", "sig") else (keys, {"k1": "alice", "k2": "bob"}.get(field, ME))
        if isinstance(holder, dict) and isinstance(holder.get(at), str):
            try:
                holder[at] = _flip(holder[at], value)
            except ValueError:
                pass  # not base64 any more (an earlier change)
    elif isinstance(keys, dict) and all(isinstance(keys.get(n), str) for n in MEMBERS):
        if value == "strip":
            del keys[field]
        elif value == "ghost":
            keys["mallory"] = keys[field]
        else:
            keys["alice"], keys["bob"] = keys["bob"], keys["alice"]


FIELDS = ["v", "room", "from", "id", "ts", "seq", "head", "keys", "nonce", "ct", "sig", "extra"]
mutations = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(FIELDS), st.one_of(
        anything, st.sampled_from([*PEOPLE, "#dev", ROOM, 1, 2, 4, 5, HEADS[1].hex(), HEADS[2].hex(), T0, T0 + 1]),
    )),
    st.tuples(st.just("drop"), st.sampled_from(FIELDS), st.none()),
    st.tuples(st.just("flip"), st.sampled_from(["nonce", "ct", "sig", "k1", "k2", "k3"]), st.integers(0, 4096)),
    st.tuples(st.just("keys"), st.sampled_from(MEMBERS), st.sampled_from(["strip", "ghost", "swap"])),
)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(hows=st.lists(mutations, min_size=1, max_size=3))
def test_mutated_room_envelopes_are_refused_for_a_reason_or_open_unchanged(
    world: World, sealed: dict[str, Any], hows: list[tuple[str, str, Any]]
) -> None:
    env = copy.deepcopy(sealed)
    for how in hows:
        _mutate(env, how)
    me = world.store.require_identity()
    try:
        opened = open_room_envelope(me.private_key, ME, key_of("alice").public_key(), env, STATE.members, ROOM, "alice")
    except EnvelopeRejected as exc:
        assert exc.reason in ENVELOPE_REASONS, exc
        assert TEXT not in str(exc)
    else:
        _opened_unchanged(env, sealed, (opened.text, opened.sender, opened.recipient, opened.msg_id, opened.ts))


def _opened_unchanged(env: dict[str, Any], sealed: dict[str, Any], opened: tuple[object, ...]) -> None:
    """What opened is what alice sealed, and every field the signature covers is as she signed it."""
    assert opened == (TEXT, "alice", ROOM, "ab" * 16, T0), opened
    assert {k: env.get(k) for k in sealed} == sealed, "an envelope opened with a signed field changed"


# --- pasted room payloads (decrypt) --------------------------------------------------------------


def _encoded(env: dict[str, Any]) -> str:
    try:
        return b64encode(json.dumps(env, allow_nan=False).encode("utf-8", "surrogatepass"))
    except (ValueError, TypeError):
        return "not json"


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    text=st.one_of(
        st.text(max_size=200),
        anything.map(lambda v: _encoded(v) if isinstance(v, dict) else str(v)),
        st.lists(mutations, min_size=1, max_size=3).map(lambda hows: ("mutated", hows)),
    )
)
def test_random_pasted_room_payloads_only_give_a_rejection(
    world: World, sealed: dict[str, Any], text: str | tuple[str, list[tuple[str, str, Any]]]
) -> None:
    store = world.store
    _reset(store, LAST)  # erin holds the whole chain; STATE (seq 4) is in it
    if isinstance(text, tuple):
        env = copy.deepcopy(sealed)
        for how in text[1]:
            _mutate(env, how)
        text = _encoded(env)
    try:
        found = open_pasted(store, store.require_identity(), text, None)
    except EnvelopeRejected as exc:
        assert exc.reason in ENVELOPE_REASONS, exc
    else:
        assert found.state == STATE
        opened = found.opened
        _opened_unchanged(
            crypto.decode_payload(text), sealed, (opened.text, opened.sender, opened.recipient, opened.msg_id, opened.ts)
        )


def test_the_genuine_payload_opens(world: World, sealed: dict[str, Any]) -> None:
    """The targets above start from a payload that opens: they test refusals, not a broken fixture."""
    _reset(world.store, LAST)
    found = open_pasted(world.store, world.store.require_identity(), crypto.encode_payload(sealed), None)
    assert found.opened.text == TEXT
    assert found.source == "the key pinned for alice (not verified yet: compare fingerprints, then securechat-client verify)"
