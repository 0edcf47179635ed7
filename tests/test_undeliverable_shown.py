"""Issue 13 item 1: an own message the server set aside (`ack` `undeliverable`, docs/protocol.md
"Delivery") is shown in all three front ends with the command layer's one wording, and the
client takes the status from the wire (it was refused as an unknown status before)."""

from __future__ import annotations

from securechat.commands.wording import undeliverable_line
from securechat.events import Acked, MessageSent
from securechat.jsonmode import event_to_json
from securechat.lineui import format_event
from securechat.protocol import validate_server_frame
from tests.support.ui_fakes import make_state, pane

ID = "2" * 32
SAID = "your message was not delivered to bob: their client failed on it again and again, so the server set it aside; it will not be resent"


def test_the_wording_says_what_happened_and_that_it_is_not_resent() -> None:
    assert undeliverable_line("bob") == SAID
    assert undeliverable_line("bob", "#ops").startswith("your message in #ops was not delivered to bob:")


def test_plain_says_it_under_the_message_and_why() -> None:
    said = format_event(Acked(ID, "bob", "undeliverable"))
    assert said == ["  (undeliverable to bob)", f"! {SAID} (message 22222222)"]  # named: it may be far above
    room = format_event(Acked(ID, "#ops", "undeliverable", "bob", 1, 2))
    assert room == [f"! {undeliverable_line('bob', '#ops')} (message 22222222)"]


def test_json_carries_the_status() -> None:
    assert event_to_json(Acked(ID, "bob", "undeliverable")) == {"event": "ack", "id": ID, "to": "bob", "status": "undeliverable"}


def test_the_full_screen_marks_the_message_and_says_why_in_its_window() -> None:
    s = make_state()
    s.switch("bob")
    s.apply(MessageSent(ID, "bob", 1_600_000_000_000, "hi", "P1"))
    s.apply(Acked(ID, "bob", "queued"))
    s.apply(Acked(ID, "bob", "undeliverable"))
    shown = pane(s)
    assert "<alice> hi  [undeliverable]" in shown and SAID in shown


def test_the_client_reads_the_status_from_the_wire() -> None:
    validate_server_frame({"type": "ack", "id": ID, "to": "bob", "status": "undeliverable"})
