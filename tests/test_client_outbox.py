"""The outbox against a damaged state file (issue 13, item 12).

A row of the outbox table that is not JSON, not an envelope, or not the envelope
its columns name is set aside (kept in ``outbox_set_aside``) with one warning
line; it never raises into the connection, so the session does not reconnect
in a loop, and the good rows around it are still sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from securechat import crypto
from securechat.client.state import ClientStore
from securechat.events import Acked, ConnectionChanged, ErrorReported, MessageReceived, Ready
from securechat.server import ChatServer
from tests.support.sessions import BITS, WAIT, Client, online

pytestmark = pytest.mark.timeout(60)

BAD_ROWS = {
    "not JSON": "{not json",
    "a JSON list": "[1, 2, 3]",
    "an object that is not an envelope": '{"id": "' + "c" * 32 + '"}',
}


def _insert(store: ClientStore, msg_id: str, recipient: str, text: str) -> None:
    with store.transaction() as db:
        db.execute(
            "INSERT INTO outbox (msg_id, recipient, envelope, created) VALUES (?, ?, ?, 0)",
            (msg_id, recipient, text),
        )


async def test_corrupt_outbox_rows_are_set_aside_with_one_line_each(
    server: ChatServer, make_client: Callable[..., Client], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    home = tmp_path / "alice-home"
    bob = await online(make_client("bob", server.port))
    first = await online(make_client("alice", server.port, home=home))
    await first.session.lookup("bob")
    await first.stop()
    store = first.session.store
    identity = store.require_identity()
    pin = store.pins.get("bob")
    assert pin is not None
    good = crypto.seal_envelope(identity.private_key, pin.public_key(), "alice", "bob", "the good one")
    # Around the good row: three damaged ones, and one whose columns name another message.
    for i, text in enumerate(BAD_ROWS.values()):
        _insert(store, f"{i:032x}", "bob", text)
    store.outbox.add("bob", good)
    other = crypto.seal_envelope(identity.private_key, pin.public_key(), "alice", "bob", "relabelled")
    _insert(store, "f" * 32, "bob", json.dumps(other))
    store.close()

    again = await online(make_client("alice", server.port, home=home))
    await again.rec.wait_kind(Acked, msg_id=good["id"], status="delivered")
    got = await bob.rec.wait_kind(MessageReceived, msg_id=good["id"])
    assert got.text == "the good one"
    warnings = [e for e in again.rec.of(ErrorReported) if e.code == "outbox_set_aside"]
    assert len(warnings) == len(BAD_ROWS) + 1
    assert all("\n" not in w.message and not w.fatal for w in warnings)
    # No reconnect loop: one connection, never dropped.
    assert len(again.rec.of(Ready)) == 1
    assert not [e for e in again.rec.of(ConnectionChanged) if e.state == "reconnecting"]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert all(r.exc_info is None for r in caplog.records)
    # Nothing left to resend, and nothing thrown away: the rows are kept aside.
    assert len(again.session.store.outbox) == 0
    kept = again.session.store.query("SELECT msg_id, envelope FROM outbox_set_aside ORDER BY seq")
    assert [text for _id, text in kept] == [*BAD_ROWS.values(), json.dumps(other)]
    assert await again.session.wait_idle(WAIT)
    await again.stop()
    await bob.stop()


def test_set_aside_rows_are_reported_once(tmp_path: Path) -> None:
    with ClientStore.open(tmp_path, "alice", bits=BITS) as store:
        _insert(store, "a" * 32, "bob", "{not json")
        assert store.outbox.entries() == []
        assert [row.msg_id for row in store.outbox.take_set_aside()] == ["a" * 32]
        assert store.outbox.take_set_aside() == []
        assert store.outbox.get("a" * 32) is None
        assert store.outbox.entries() == []
