"""``--json`` mode in process: command parsing and replies, and the exit status when sends stay unacknowledged."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from securechat import crypto
from securechat.client import ClientSession
from securechat.client.state import ClientStore
from securechat.commands import Hint, parse_json
from securechat.commands.grammar import Msg, Quit, Users
from securechat.errors import KeyChanged, ServerErrorReply, SessionClosed
from securechat.events import ErrorReported, MessageReceived, MessageRejected, RoomRejected
from securechat.jsonmode import JsonFrontEnd, event_to_json, failure_code, run_json_mode
from securechat.records import ContactInfo
from tests.support.ui_fakes import BOB_FP, BOB_NEW_FP, FakeSession

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\xff\xfe",
        b"null",
        b'"send"',
        b'{"cmd": 1}',
        b'{"cmd": "send", "to": "bob", "text": 5}',
        b'{"cmd": "verify", "name": "bob"}',
        b'{"cmd": "whois"}',
        b'{"cmd": "trust", "name": null}',
        b"[" * 100_000,
    ],
)
def test_bad_commands(line: bytes) -> None:
    hint = parse_json(line)
    assert isinstance(hint, Hint)
    assert hint.code == "bad_command" and hint.cmd is None and hint.text


def test_good_commands() -> None:
    assert parse_json(b'{"cmd":"send","to":"bob","text":"hi","extra":1}\n') == Msg("bob", "hi")
    assert parse_json(b'{"cmd":"list"}') == Users()
    assert parse_json(b'{"cmd":"quit"}') == Quit()


def test_an_error_about_a_send_says_whether_the_client_sends_it_again() -> None:
    msg_id = "1" * 32
    kept = event_to_json(ErrorReported("internal", "try again shortly", msg_id=msg_id, retried=True))
    assert kept == {"event": "error", "code": "internal", "message": "try again shortly", "fatal": False,
                    "id": msg_id, "retried": True}  # fmt: skip
    given_up = event_to_json(ErrorReported("unknown_user", "no such user", msg_id=msg_id))
    assert given_up is not None and given_up["retried"] is False
    assert "retried" not in (event_to_json(ErrorReported("internal", "not about a send")) or {})


def test_failure_codes() -> None:
    assert failure_code(KeyChanged("bob", "a", "b")) == "key_changed"
    assert failure_code(ServerErrorReply("unknown_user", "no")) == "unknown_user"
    assert failure_code(SessionClosed("x")) == "offline"
    assert failure_code(RuntimeError("bug")) == "internal_error"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def lines(*items: bytes) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def test_unacknowledged_sends_exit_2_and_stay_in_outbox(tmp_path: Path) -> None:
    bob_key = crypto.generate_private_key(2048)
    store = ClientStore.open(tmp_path, "alice", bits=2048)
    store.pins.pin("bob", crypto.public_key_pem(bob_key.public_key()))
    session = ClientSession(store, "127.0.0.1", closed_port(), backoff_initial=0.05, backoff_max=0.1)
    out: list[dict[str, Any]] = []
    status = await run_json_mode(
        session,
        lines(b'{"cmd":"send","to":"bob","text":"later"}\n', b"\n", b"oops\n"),
        out.append,
        drain_timeout=0.3,
    )
    assert status == 2
    assert all(json.loads(json.dumps(o)) == o for o in out)
    sent = next(o for o in out if o["event"] == "sent")
    assert [o["code"] for o in out if o["event"] == "error"] == ["bad_command", "unacknowledged"]
    assert out[-1] == {"event": "connection", "state": "offline"}
    assert [e.msg_id for e in store.outbox.entries()] == [sent["id"]]
    store.close()


async def test_replies_to_commands_keep_the_documented_shapes() -> None:
    fake = FakeSession(
        contacts={"bob": ContactInfo("bob", BOB_FP, "changed", BOB_NEW_FP)},
        server_keys={"carol": "c0c0" * 16},
    )
    out: list[dict[str, Any]] = []
    front = JsonFrontEnd(fake, out.append, own_stdout=False)  # type: ignore[arg-type]
    fake.add_listener(front.on_event)
    for line in (
        b'{"cmd":"whois","name":"Carol"}',
        b'{"cmd":"trust","name":"bob"}',
        b'{"cmd":"verify","name":"bob","fingerprint":"' + BOB_NEW_FP.encode() + b'"}',
        b'{"cmd":"verify","name":"bob","fingerprint":"' + BOB_FP.encode() + b'"}',
        b'{"cmd":"verify","name":"bob","fingerprint":"12"}',
        b'{"cmd":"send","to":"nobody","text":"x"}',
        b'{"cmd":"list"}',
    ):
        assert await front.handle(line)
    assert not await front.handle(b'{"cmd":"quit"}')
    fp_c = "c0c0" * 16
    assert out == [
        {"event": "pinned", "name": "carol", "fingerprint": fp_c, "trust": "unverified"},
        {
            "event": "contact",
            "name": "carol",
            "fingerprint": fp_c,
            "trust": "unverified",
            "pending_fingerprint": None,
        },
        {"event": "pinned", "name": "bob", "fingerprint": BOB_NEW_FP, "trust": "unverified"},
        {
            "event": "contact",
            "name": "bob",
            "fingerprint": BOB_NEW_FP,
            "trust": "unverified",
            "pending_fingerprint": None,
        },
        {"event": "pinned", "name": "bob", "fingerprint": BOB_NEW_FP, "trust": "verified"},
        {"event": "verify", "name": "bob", "ok": True},
        {"event": "verify", "name": "bob", "ok": False},
        {
            "event": "error",
            "code": "invalid_fingerprint",
            "message": "a fingerprint is 64 hex digits (spaces, colons and dashes are ignored)",
            "fatal": False,
            "cmd": "verify",
        },
        {
            "event": "error",
            "code": "unknown_user",
            "message": "no user named 'nobody'",  # the code is in its field (it read "server error unknown_user: ...")
            "fatal": False,
            "cmd": "send",
        },
        {
            "event": "users",
            "users": [
                {"name": "alice", "online": True},
                {"name": "bob", "online": True},
                {"name": "carol", "online": False},
            ],
            "more": False,
        },
    ]


async def test_room_commands_and_events_have_exactly_the_documented_names() -> None:
    """Issue 10's --json names: the room commands, and the room, message, ack and error events."""
    fake = FakeSession(users={"alice": True, "bob": True, "carol": False})
    out: list[dict[str, Any]] = []
    front = JsonFrontEnd(fake, out.append, own_stdout=False)  # type: ignore[arg-type]
    fake.add_listener(front.on_event)
    for line in (
        b'{"cmd":"room_create","room":"#ops","open":false}',
        b'{"cmd":"room_add","room":"#ops","name":"bob"}',
        b'{"cmd":"room_add","room":"#ops","name":"carol"}',
        b'{"cmd":"room_admin","room":"#ops","name":"bob"}',
        b'{"cmd":"room_members","room":"#ops"}',
        b'{"cmd":"send","to":"#ops","text":"hi"}',
        b'{"cmd":"room_remove","room":"#ops","name":"bob"}',
        b'{"cmd":"room_remove","room":"#ops","name":"carol"}',
        b'{"cmd":"room_join","room":"#ops"}',
        b'{"cmd":"room_leave","room":"#ops"}',
        b'{"cmd":"room_create","room":"#ops","open":"yes"}',
    ):
        assert await front.handle(line)
    rooms = [o for o in out if o["event"] == "room"]
    assert [(o["change"], o["name"], o["by"]) for o in rooms] == [
        ("created", "alice", "alice"),
        ("added", "bob", "alice"),
        ("added", "carol", "alice"),
        ("admin", "bob", "alice"),
        ("state", None, None),
        ("removed", "carol", "alice"),
        ("left", "alice", "alice"),
    ]
    assert rooms[4] == {"event": "room", "room": "#ops", "change": "state", "name": None, "by": None,
                        "members": ["alice", "bob", "carol"], "admins": ["alice", "bob"]}
    assert rooms[5]["members"] == ["alice", "bob"] and rooms[5]["admins"] == ["alice", "bob"]
    msg_id = next(o["id"] for o in out if o["event"] == "sent")
    acks = [o for o in out if o["event"] == "ack"]
    assert acks == [
        {"event": "ack", "id": msg_id, "to": "#ops", "member": "bob", "status": "delivered"},
        {"event": "ack", "id": msg_id, "to": "#ops", "member": "carol", "status": "queued"},
    ]
    errors = [(o["code"], o["cmd"]) for o in out if o["event"] == "error"]
    # alice, a member already, asks to join: told so (bad_entry), not that #ops is an invite room
    assert errors == [("not_allowed", "room_remove"), ("bad_entry", "room_join"), ("bad_input", "room_create")]
    refused = next(o for o in out if o["event"] == "error")  # the text alone, as for the server's refusals
    assert refused["message"] == "bob is an admin: an admin can only leave by themselves", refused
    fake.emit(MessageReceived("bob", "ab" * 16, 1, "hello", "P", 2, "#ops"))
    fake.emit(MessageRejected("bob", "cd" * 16, "member_mismatch", "keys for non-members: mallory", None, "#ops"))
    fake.emit(RoomRejected("#ops", "fork", "two entries at seq 2", 2))
    assert out[-3] == {"event": "message", "room": "#ops", "from": "bob", "id": "ab" * 16, "ts": 1, "server_ts": 2,
                       "text": "hello", "payload": "P"}
    assert out[-2] == {"event": "rejected", "room": "#ops", "from": "bob", "id": "cd" * 16,
                       "reason": "member_mismatch", "detail": "keys for non-members: mallory"}
    assert out[-1] == {"event": "rejected", "room": "#ops", "reason": "fork", "detail": "two entries at seq 2",
                       "seq": 2}
