"""``--json`` mode in process: command parsing, and the exit status when sends stay unacknowledged."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from securechat import crypto
from securechat.client import ClientSession
from securechat.client.state import ClientStore as KeyStore
from securechat.errors import KeyChanged, ServerErrorReply, SessionClosed
from securechat.jsonmode import BadCommand, failure_code, parse_command, run_json_mode

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
    with pytest.raises(BadCommand):
        parse_command(line)


def test_good_commands() -> None:
    assert parse_command(b'{"cmd":"send","to":"bob","text":"hi","extra":1}\n')["text"] == "hi"
    assert parse_command(b'{"cmd":"list"}')["cmd"] == "list"
    assert parse_command(b'{"cmd":"quit"}')["cmd"] == "quit"


def test_failure_codes() -> None:
    assert failure_code(KeyChanged("bob", "a", "b")) == "key_changed"
    assert failure_code(ServerErrorReply("unknown_user", "no")) == "unknown_user"
    assert failure_code(SessionClosed("x")) == "offline"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def lines(*items: bytes) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def test_unacknowledged_sends_exit_2_and_stay_in_outbox(tmp_path: Path) -> None:
    bob_key = crypto.generate_private_key(2048)
    store = KeyStore.open(tmp_path, "alice", bits=2048)
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
