"""Hypothesis fuzzing of every server handler after a valid login (issue #5).

tests/test_fuzz_decoder.py fuzzes the decoder, schemas and state table
without a network; tests/test_server.py has a 40-example smoke test that
starts a server per example. Here one real ChatServer runs on 127.0.0.1 in a
background thread for the whole module, each example logs in on a fresh
connection and sends what hypothesis draws, and the invariant is checked on
the wire and in the log:

* every answer is a known server frame type; every ``error`` carries a
  spec code and is never ``internal``; a fatal error is followed by a close;
* the server logs no ERROR record (no handler raised), and stays responsive
  for a bystander connection.

The active hypothesis profile decides the example count: ``ci`` (default) is
quick; ``HYPOTHESIS_PROFILE=fuzz`` (tools/fuzz.sh) runs 10,000 per test.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from securechat.protocol import EXTRA_FATAL_CODES, FATAL_CODES, NONFATAL_CODES, SERVER_TYPES, encode_frame
from securechat.rooms.log import RoomState, apply, parse_entry
from securechat.rooms.sealing import seal_room, sign_entry, verify_entry
from securechat.server import ChatServer, ServerConfig
from tests.support.rawclient import RawClient, envelope, identity_key, msg_id
from tests.support.rooms import key_of
from tests.support.strategies import anything, client_frames, envelopes, names, room_frames

pytestmark = pytest.mark.timeout(1800)

T = TypeVar("T")
EXAMPLE_TIMEOUT = 10.0
ALLOWED_CODES = FATAL_CODES | NONFATAL_CODES | EXTRA_FATAL_CODES


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class ServerThread:
    """A ChatServer on its own event loop in a daemon thread."""

    def __init__(self, db_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        # Generous limits: the fuzzer should reach the handlers, not the rate limiter. Plaintext: the
        # fuzzer aims at the frames, and ends its random bytes with a TCP half-close, which asyncio's
        # TLS cannot do (the TLS layer has its own tests: tests/test_tls.py).
        config = ServerConfig(
            host="127.0.0.1", port=0, db_path=db_path, rate=1e6, burst=10**6, lookup_rate=1e6, queue_limit=100,
            tls=False,
        )
        self.server = ChatServer(config)
        self.run(self.server.start())
        self.watcher: RawClient = self.run(self._login("watcher"))

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = EXAMPLE_TIMEOUT * 3) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _login(self, name: str) -> RawClient:
        c = await RawClient.connect(self.server.port, tls=False)
        await c.login(name, identity_key(name))
        return c

    def close(self) -> None:
        try:
            self.run(self.watcher.close())
            self.run(self.server.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, _ErrorRecords]]:
    errors = _ErrorRecords()
    log = logging.getLogger("securechat")
    log.addHandler(errors)
    srv = ServerThread(tmp_path_factory.mktemp("fuzz") / "server.db")
    # bob is registered (sends to him are stored), carol is registered and online
    srv.run(srv._login("bob")).writer.close()
    carol = srv.run(srv._login("carol"))
    try:
        yield srv, errors
    finally:
        srv.run(carol.close())
        srv.close()
        log.removeHandler(errors)


def check_answer(frame: dict[str, Any]) -> bool:
    """Assert one answer is allowed; True if it was fatal."""
    assert frame["type"] in SERVER_TYPES, frame
    if frame["type"] != "error":
        return False
    assert frame["code"] in ALLOWED_CODES, frame
    assert frame["code"] != "internal", frame
    assert "Traceback" not in str(frame.get("message")), frame
    return frame.get("fatal") is True


async def _bystander_alive(srv: ServerThread) -> None:
    await srv.watcher.send_frame({"type": "ping", "rid": "watch"})
    assert (await srv.watcher.recv_type("pong", timeout=EXAMPLE_TIMEOUT))["rid"] == "watch"


async def _frames_scenario(srv: ServerThread, frames: list[dict[str, Any]]) -> None:
    c = await srv._login("fuzzer")
    try:
        await c.send_raw(b"".join(encode_frame(f) for f in frames))
        await c.send_frame({"type": "ping", "rid": "fuzz-end"})
        async with asyncio.timeout(EXAMPLE_TIMEOUT):
            while True:
                try:
                    reply = await c.recv(EXAMPLE_TIMEOUT)
                except ConnectionError:
                    raise AssertionError("closed without a fatal error") from None
                if check_answer(reply):
                    rest = await c.expect_closed(EXAMPLE_TIMEOUT)
                    assert all(f["type"] in SERVER_TYPES for f in rest), rest
                    break
                if reply == {"type": "pong", "rid": "fuzz-end"}:
                    break
    finally:
        await c.close()
    await _bystander_alive(srv)


valid_envelopes = st.builds(
    lambda to, n, patch: {**envelope("fuzzer", to, msg_id(n)), **patch},
    st.sampled_from(["bob", "carol", "fuzzer", "nobody"]),
    st.integers(0, 2**128 - 1),
    st.dictionaries(
        st.sampled_from(["v", "from", "to", "id", "ts", "key", "nonce", "ct", "sig"]), anything, max_size=2
    ),
)

# Entries the fuzzer really signed: creates of its own rooms, and changes on them (most refused by the rules).
signed_entries = st.builds(
    lambda n, seq, op, name, kind: sign_entry(
        key_of("fuzzer"), f"#fz{n}", seq, bytes(32), op, "fuzzer", name, kind if op == "create" else "", 1
    ).to_json(),
    st.integers(0, 3),
    st.integers(0, 2),
    st.sampled_from(["create", "add", "join", "leave", "remove", "admin"]),
    st.sampled_from(["fuzzer", "bob", "carol"]),
    st.sampled_from(["invite", "open"]),
)

handler_frames = st.one_of(
    client_frames,
    room_frames,
    st.builds(lambda kind, entry: {"type": kind, "entry": entry},
              st.sampled_from(["room_create", "room_append"]), signed_entries),
    st.builds(lambda n, since: {"type": "room_log", "room": f"#fz{n}", "since": since},
              st.integers(0, 3), st.integers(0, 3)),
    st.just({"type": "rooms"}),
    st.builds(
        lambda to, env, rid: {"type": "send", "to": to, "envelope": env, **({"rid": rid} if rid else {})},
        st.sampled_from(["bob", "carol", "nobody", "fuzzer"]) | names,
        valid_envelopes | envelopes,
        st.none() | st.text(max_size=70),
    ),
    st.builds(
        lambda name: {"type": "lookup", "name": name}, st.sampled_from(["bob", "carol", "nobody"]) | names
    ),
    st.builds(
        lambda sender, n: {"type": "received", "from": sender, "id": msg_id(n)},
        st.sampled_from(["bob", "carol"]) | names,
        st.integers(0, 5),
    ),
    st.just({"type": "list"}),
    st.builds(lambda kind: {"type": kind}, st.text(max_size=12)),
)


@pytest.mark.slow
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(frames=st.lists(handler_frames, min_size=1, max_size=6))
def test_random_frames_after_login_only_give_answers_errors_or_closes(
    target: tuple[ServerThread, _ErrorRecords], frames: list[dict[str, Any]]
) -> None:
    srv, errors = target
    srv.run(_frames_scenario(srv, frames))
    assert not errors.records, [r.getMessage() for r in errors.records]


async def _bytes_scenario(srv: ServerThread, prefix: list[dict[str, Any]], data: bytes) -> None:
    c = await srv._login("fuzzer")
    try:
        await c.send_raw(b"".join(encode_frame(f) for f in prefix) + data)
        if c.writer.can_write_eof():
            c.writer.write_eof()  # the server sees EOF even if ``data`` ended mid-frame
        try:
            seen = await c.expect_closed(EXAMPLE_TIMEOUT)
        except ConnectionError:
            seen = []
        fatal = [f for f in seen if f["type"] == "error" and f.get("fatal")]
        for frame in seen:
            check_answer(frame)
        if fatal:
            assert fatal[0]["code"] in ("bad_frame", "frame_too_large", "invalid_name", "bad_key"), fatal
    finally:
        await c.close()
    await _bystander_alive(srv)


@pytest.mark.slow
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(prefix=st.lists(handler_frames, max_size=3), data=st.binary(max_size=300))
def test_random_bytes_after_login_only_give_errors_or_closes(
    target: tuple[ServerThread, _ErrorRecords], prefix: list[dict[str, Any]], data: bytes
) -> None:
    srv, errors = target
    srv.run(_bytes_scenario(srv, prefix, data))
    assert not errors.records, [r.getMessage() for r in errors.records]


# --- room frames mutated from genuine ones (issue 10) ---------------------------------------------

FZ_ROOM = "#fzroom"
# What each room frame may be answered with when one of its fields is wrong (docs/protocol.md 11.8).
ROOM_ANSWER_CODES: dict[str, frozenset[str]] = {
    "room_create": frozenset({"bad_request", "invalid_name", "bad_entry", "room_exists", "unknown_user",
                              "rate_limited", "too_many_rooms", "not_allowed"}),
    "room_append": frozenset({"bad_request", "invalid_name", "bad_entry", "stale_state", "unknown_room", "not_allowed",
                              "not_member", "room_full", "unknown_user", "rate_limited", "too_many_rooms"}),
    "room_log": frozenset({"bad_request", "invalid_name", "unknown_room", "not_member", "rate_limited"}),
    "room_send": frozenset({"bad_request", "invalid_name", "unknown_room", "not_member", "stale_state",
                            "message_too_large", "rate_limited", "queue_full"}),
    "rooms": frozenset({"bad_request", "invalid_name", "rate_limited"}),
}
ROOM_FRAME_FIELDS = {
    "room_create": ("entry", "rid", "extra"),
    "room_append": ("entry", "rid", "extra"),
    "room_log": ("room", "since", "rid", "extra"),
    "room_send": ("room", "envelope", "rid", "extra"),
    "rooms": ("after", "rid", "extra"),
}
ENTRY_FIELDS = ["room", "seq", "prev", "op", "by", "name", "kind", "ts", "sig", "extra"]
ENVELOPE_FIELDS = ["v", "room", "from", "id", "ts", "seq", "head", "keys", "nonce", "ct", "sig", "extra"]
inner_values = st.one_of(
    anything, st.sampled_from([FZ_ROOM, "#nope", "dora", "fuzzer", "bob", "add", "remove", "admin", 2**53]),
    st.integers(0, 5),
)
changes = st.sampled_from(["room_create", "room_append"])
room_mutations = st.one_of(
    # A field of the frame set to anything, or dropped.
    st.tuples(st.sampled_from(sorted(ROOM_FRAME_FIELDS)), st.one_of(
        st.tuples(st.just("top"), st.integers(0, 3), anything | st.sampled_from([FZ_ROOM, "#nope", "dora", 0, -1])),
        st.tuples(st.just("drop"), st.integers(0, 3), st.none()),
    )),
    # Inside the entry or the envelope, where the signature and the rules must catch it.
    st.tuples(changes, st.tuples(st.just("entry"), st.sampled_from(ENTRY_FIELDS), inner_values)),
    st.tuples(changes, st.tuples(st.just("entry"), st.just("ts"), st.integers(2, 99))),
    st.tuples(changes, st.tuples(st.just("resign"), st.just(""), st.sampled_from(["dora", "bob"]))),
    st.tuples(st.just("room_send"), st.tuples(st.just("envelope"), st.sampled_from(ENVELOPE_FIELDS), inner_values)),
)


async def _room_log(c: RawClient, room: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    while True:
        await c.send_frame({"type": "room_log", "room": room, "since": len(entries), "rid": "log"})
        async with asyncio.timeout(EXAMPLE_TIMEOUT):
            while (page := await c.recv(EXAMPLE_TIMEOUT)).get("rid") != "log":
                pass  # pushes of changes and messages to the member
        assert page["type"] == "room_update", page
        entries += page["entries"]
        if not page["more"]:
            return entries


def _verified_state(entries: list[dict[str, Any]]) -> RoomState:
    """Every entry signed by the key of its ``by`` and allowed by the rules, in order: the state they make."""
    state: RoomState | None = None
    for raw in entries:
        entry = parse_entry(raw)
        assert verify_entry(identity_key(entry.by).public_key(), entry), raw
        state = apply(state, entry)
    assert state is not None
    return state


def _genuine_room_frame(kind: str, state: RoomState, n: int) -> dict[str, Any]:
    me = "fuzzer"
    if kind == "room_create":
        return {"type": kind, "entry": sign_entry(identity_key(me), f"#fzn{n % 1000}", 0, bytes(32), "create", me, me,
                                                  "open", 1).to_json()}
    if kind == "room_append":
        op, name = ("remove", "bob") if "bob" in state.members else ("add", "bob")
        return {"type": kind, "entry": sign_entry(identity_key(me), FZ_ROOM, state.seq + 1, state.head, op, me, name,
                                                  "", 1).to_json()}
    if kind == "room_log":
        return {"type": kind, "room": FZ_ROOM, "since": 0}
    if kind == "room_send":
        keys = {name: identity_key(name).public_key() for name in state.members}
        return {"type": kind, "room": FZ_ROOM, "envelope": seal_room(identity_key(me), keys, state, me, "fz")}
    return {"type": "rooms"}


def _mutate_room_frame(frame: dict[str, Any], how: tuple[str, int, Any] | tuple[str, str, Any]) -> None:
    where, key, value = how
    fields = ROOM_FRAME_FIELDS[frame["type"]]
    if where == "top":
        frame[fields[int(key) % len(fields)]] = value
    elif where == "drop":
        frame.pop(fields[int(key) % len(fields)], None)
    elif where == "resign":  # the same entry, signed by someone else than its ``by``
        e = parse_entry(frame["entry"])
        frame["entry"] = sign_entry(identity_key(value), e.room, e.seq, e.prev, e.op, e.by, e.name, e.kind, e.ts).to_json()
    elif isinstance(frame.get(where), dict):
        frame[where][key] = value


async def _room_scenario(srv: ServerThread, dora: RawClient, kind: str, how: Any, n: int) -> list[str]:
    """Send one mutated frame; the answers seen, for the statistics."""
    seen: list[str] = []
    state = _verified_state(await _room_log(dora, FZ_ROOM))
    frame = _genuine_room_frame(kind, state, n)
    _mutate_room_frame(frame, how)
    c = await srv._login("fuzzer")
    try:
        await c.send_raw(encode_frame(frame) + encode_frame({"type": "ping", "rid": "fz-end"}))
        async with asyncio.timeout(EXAMPLE_TIMEOUT):
            while (reply := await c.recv(EXAMPLE_TIMEOUT)) != {"type": "pong", "rid": "fz-end"}:
                if check_answer(reply):
                    assert reply["code"] == "invalid_name", reply  # the one fatal room code (11.8)
                    await c.expect_closed(EXAMPLE_TIMEOUT)
                    break
                if reply["type"] == "error":
                    assert reply["code"] in ROOM_ANSWER_CODES[kind], (kind, how, reply)
                seen.append(f"{kind}: {reply['type']} {reply.get('code', '')}".strip())
        # Nothing else is disturbed: the log still verifies, a member is still served.
        _verified_state(await _room_log(dora, FZ_ROOM))
    finally:
        await c.close()
    await _bystander_alive(srv)
    return seen


@pytest.fixture
def fz_room(target: tuple[ServerThread, _ErrorRecords]) -> Iterator[RawClient]:
    """#fzroom: fuzzer's invite room with dora in it; dora is the member who reads its log."""
    srv, _ = target

    async def setup() -> RawClient:
        dora = await srv._login("dora")
        owner = await srv._login("fuzzer")
        create = sign_entry(identity_key("fuzzer"), FZ_ROOM, 0, bytes(32), "create", "fuzzer", "fuzzer", "invite", 1)
        await owner.send_frame({"type": "room_create", "entry": create.to_json(), "rid": "c"})
        await owner.recv_type("room_update")
        add = sign_entry(identity_key("fuzzer"), FZ_ROOM, 1, create.head(), "add", "fuzzer", "dora", "", 1)
        await owner.send_frame({"type": "room_append", "entry": add.to_json(), "rid": "a"})
        await owner.recv_type("room_update")
        await owner.close()
        return dora

    dora = srv.run(setup())
    yield dora
    srv.run(dora.close())


@pytest.mark.slow
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(mutation=room_mutations, n=st.integers(0, 2**20))
def test_mutated_room_frames_get_their_codes_and_disturb_nothing(
    target: tuple[ServerThread, _ErrorRecords], fz_room: RawClient, mutation: Any, n: int
) -> None:
    """Every room frame type, genuine but for one field: answered or refused with a code of that frame
    (never internal, fatal only for a bad room name), the room's log still verifies, a member still served."""
    srv, errors = target
    kind, how = mutation
    event(f"{kind}: {how[0]}")
    for seen in srv.run(_room_scenario(srv, fz_room, kind, how, n)):
        event(seen)
    assert not errors.records, [r.getMessage() for r in errors.records]


def test_the_fuzzed_server_is_still_whole(target: tuple[ServerThread, _ErrorRecords]) -> None:
    """After every example: no fuzzing connection left behind, the bystander still served."""
    srv, errors = target
    srv.run(_bystander_alive(srv))
    assert not errors.records

    async def settled() -> set[str | None]:
        async with asyncio.timeout(EXAMPLE_TIMEOUT):
            while set(srv.server.session_names()) - {"watcher", "carol"}:
                await asyncio.sleep(0.05)
        return set(srv.server.session_names())

    # carol never sends a frame, so a long run closes her at the idle timeout (120 s): expected.
    assert "watcher" in srv.run(settled())
