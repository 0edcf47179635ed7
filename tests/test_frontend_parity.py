"""Issue 9's bar: every slash command gives the same result in the full-screen UI and ``--plain``.

One script of typed lines (every command, their aliases, the mistakes, and
``/whois`` online and offline) runs through the real full-screen application,
headless, and through ``--plain``'s interpreter, each over its own fake
session set up the same way. After every line, what each front end showed is
reduced to one comparable form (no time stamps, colours, markers or windows)
and the two must be equal, as must the calls each made on its session.
Commands declared for one front end only (``/mouse``) and the key line of
``/help`` are checked against their declarations instead.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from securechat.commands import grammar as g
from securechat.commands.wording import (
    KEY_TIPS,
    OFFLINE_USERS,
    banner_lines,
    banner_pointer_line,
    offline_first_message,
    unavailable,
)
from securechat.events import ContactInfo, HistoryEntry, MessageReceived, Ready
from securechat.lineui import MESSAGE_INDENT, LineChat
from securechat.ui import ChatUI
from securechat.ui.state import STATUS_WINDOW, Line
from tests.support.ui_fakes import BOB_FP, FakeSession
from tests.support.ui_harness import running_ui, wait_until

pytestmark = pytest.mark.timeout(60)

CAROL_FP = "ca20" * 16
MALLORY_OLD = "0d0d" * 16
MALLORY_NEW = "7e7e" * 16
T0 = 1_600_000_000_000
OFFLINE = object()  # not typed: the connection drops here
READY = object()  # not typed: the session signs in (each front end fetches the directory, silently)
ROOM_MESSAGE = object()  # not typed: bob writes in #ops (a room message arrives)

SCRIPT: list[str | object] = [
    READY,
    "hello?",
    "/help",
    "/fingerprint",
    "/users",
    "/who",
    "/whois bob",
    "/w Carol",
    "/whois nobody",
    "/whois Bad!",
    "/whois",
    "/to bob",
    "hi bob",
    "//etc is a path",
    "line one\nline two",
    "/msg carol see you at 5",
    "after the msg",
    "/m bob short",
    "/msg bob",
    "/msg BAD! hi",
    "/msg nobody hello",
    "/verify bob 1234",
    "/verify bob " + "00" * 32,
    "/verify bob " + " ".join(BOB_FP[i : i + 4] for i in range(0, 64, 4)).upper(),
    "/verify dave " + BOB_FP,
    "/verify bob",
    "/whois mallory",
    "/msg mallory still there?",
    "/trust mallory",
    "/trust bob",
    "/trust nobody",
    "/query carol",
    "/to bob",
    # /mouse before /raw: with the mouse on, the full-screen UI adds that /raw turned it off.
    "/mouse",
    "/raw",
    "with payload",
    "/raw",
    "/clear",
    "/to bob",
    "/to alice",
    "/whois alice",
    "/to nobody",
    "/users now",
    "/frobnicate",
    "/",
    "/to bob carol",
    # Rooms (issue 10): the same command layer, the real rules (FakeRooms uses rooms.log.check_change).
    "/rooms",
    "/create #ops",
    "hi team",
    "/add #ops bob",
    "/add #ops carol",
    "/add #ops nobody",
    "/members",
    "/admin #ops bob",
    "/remove #ops bob",
    "/remove #ops carol",
    "/members #ops",
    ROOM_MESSAGE,
    "/msg #ops from the room",
    "/create #ops",
    "/create #Bad!",
    "/create #lobby open",
    "/create #x maybe",
    "/add #ops",
    "/join #nowhere",
    "/join #full",
    "/members #nowhere",
    "/rooms now",
    "/to #ops",
    "/leave #lobby",
    "/rooms",
    "/msg #lobby anyone?",
    "/join #lobby",
    "/to bob",
    OFFLINE,
    "/whois bob",
    "/whois carol",
    "/users",
    "while offline",
    "/msg #ops queued for the room",
    "/msg dave hi",
    "/quit",
]


def make_session() -> FakeSession:
    return FakeSession(
        users={"alice": True, "bob": True, "carol": False, "dave": False, "mallory": True},
        server_keys={"bob": BOB_FP, "carol": CAROL_FP},
        contacts={"mallory": ContactInfo("mallory", MALLORY_OLD, "changed", MALLORY_NEW)},
        changed={"mallory"},
        histories={
            "bob": [
                HistoryEntry("bob", "in", "h1" * 16, T0, "old hello"),
                HistoryEntry("bob", "out", "h2" * 16, T0 + 1000, "old reply", "delivered"),
            ]
        },
    )


Shown = tuple[str, ...]
# Lines that only say where the full screen put something (--plain prints it in line).
LAYOUT_ONLY = (banner_pointer_line("mallory"),)


@dataclass
class Step:
    """What one front end showed for one script line, and what it asked of its session."""

    shown: list[Shown]
    calls: list[tuple[str, object]]
    sent: list[tuple[str, str]]
    current: str | None
    quit: bool = False
    extra: dict[str, object] = field(default_factory=dict)


async def _happen(what: object, fake: FakeSession) -> None:
    if what is OFFLINE:
        fake.go_offline()
        return
    if what is ROOM_MESSAGE:
        fake.emit(MessageReceived("bob", "r1" * 16, T0, "hello #ops", "PAYLOAD-room", None, "#ops"))
        return
    fake.emit(Ready(fake.name, fake.fingerprint))
    await wait_until(lambda: ("list_users", None) in fake.calls, what="the directory asked for")
    await asyncio.sleep(0)  # its answer rendered


# --- the full-screen UI --------------------------------------------------------------------


def _ui_line(line: Line, show_raw: bool) -> Iterator[Shown]:
    if line.text.startswith(LAYOUT_ONLY):
        return
    if line.kind in ("in", "out"):
        status = "" if line.status == "sending" else line.status
        yield ("msg", line.sender, line.text, status)
        if show_raw and line.payload:
            yield ("payload", line.payload)
    else:
        yield ("*" if line.kind == "info" else "!", line.text.strip())


def _ui_snapshot(ui: ChatUI) -> tuple[set[int], set[str]]:
    lines = {id(line) for window in ui.state.windows.values() for line in window}
    return lines, set(ui.state.banners)


def _ui_new(ui: ChatUI, before: tuple[set[int], set[str]]) -> list[Shown]:
    seen, banners = before
    shown: list[Shown] = []
    for window in ui.state.windows.values():
        for line in window:
            if id(line) not in seen:
                seen.add(id(line))  # a /msg echo is one line shown in two windows
                shown += _ui_line(line, ui.state.show_raw)
    for name in sorted(set(ui.state.banners) - banners):
        shown += [("!", text.strip()) for text in banner_lines(ui.state.banners[name])]
    return shown


async def run_full_screen() -> list[Step]:
    fake = make_session()
    steps: list[Step] = []
    async with running_ui(fake, monochrome=True) as h:
        for item in SCRIPT:
            if item is ROOM_MESSAGE:  # shown like a typed line's result: compared too
                before = _ui_snapshot(h.ui)
                await _happen(item, fake)
                steps.append(Step(_ui_new(h.ui, before), [], [], h.ui.executor.current))
                continue
            if not isinstance(item, str):
                await _happen(item, fake)
                continue
            before, calls, sent = _ui_snapshot(h.ui), len(fake.calls), len(fake.sent)
            await h.line(item)
            current = h.ui.executor.current
            assert h.ui.state.current == (current if current is not None else STATUS_WINDOW)
            # Closing the session once the screen is gone is the run's ending, not /quit's doing
            # (run_line_ui does the same after LineChat.handle returns False).
            asked = [call for call in fake.calls[calls:] if call != ("close", None)]
            shown = [s for s in _ui_new(h.ui, before) if s != ("*", "the session ended; /quit to leave")]
            step = Step(shown, asked, fake.sent[sent:], current)
            if item == "/quit":
                assert await h.task == 0
            step.quit, step.extra["mouse"] = h.task.done(), h.ui.mouse
            steps.append(step)
    return steps


# --- --plain ---------------------------------------------------------------------------------

# The time: HH:MM today, with the date on another day (commands/times.py).
# A room's message names the room before its sender (the full screen shows it in the room's window).
_MESSAGE = re.compile(r"\[(?:\d{4}-\d\d-\d\d )?\d\d:\d\d\] (?:me -> \S+|(?:#\S+ )?(\S+)): (.*)", re.DOTALL)
_ACK = re.compile(r"  \((\w+(?: \d+/\d+)?) to \S+\)")


def _plain_shown(printed: list[str], own: str) -> list[Shown]:
    shown: list[Shown] = []
    for text in printed:
        if message := _MESSAGE.fullmatch(text):
            shown.append(("msg", message[1] or own, message[2], ""))
        elif ack := _ACK.fullmatch(text):
            last = max(i for i, s in enumerate(shown) if s[0] == "msg" and s[1] == own)
            shown[last] = (*shown[last][:3], ack[1])
        elif text.startswith(("* ", "! ")):
            shown.append((text[0], text[2:].strip()))
        elif text.startswith("PAYLOAD-"):
            shown.append(("payload", text))
        elif text.startswith(" " * MESSAGE_INDENT) and shown and shown[-1][0] == "msg":
            # The next row of a multi-line message: the UI keeps it in the message's line.
            kind, who, body, ack = shown[-1]
            shown[-1] = (kind, who, body + "\n" + text[MESSAGE_INDENT:], ack)
        else:
            raise AssertionError(f"--plain printed a line of no known kind: {text!r}")
    return shown


async def run_plain() -> list[Step]:
    fake = make_session()
    printed: list[str] = []
    chat = LineChat(fake, printed.append)
    fake.add_listener(chat.on_event)
    steps: list[Step] = []
    for item in SCRIPT:
        if item is ROOM_MESSAGE:
            printed.clear()
            await _happen(item, fake)
            steps.append(Step(_plain_shown(printed, fake.name), [], [], chat.current))
            continue
        if not isinstance(item, str):
            await _happen(item, fake)
            continue
        printed.clear()
        calls, sent = len(fake.calls), len(fake.sent)
        going_on = await chat.handle(item + "\n")
        shown = _plain_shown(printed, fake.name)
        steps.append(Step(shown, fake.calls[calls:], fake.sent[sent:], chat.current, quit=not going_on))
    return steps


# --- the comparison --------------------------------------------------------------------------


def test_the_script_uses_every_command() -> None:
    parsed = [g.parse_line(item) for item in SCRIPT if isinstance(item, str)]
    used = {
        g.slash_name(command) for command in parsed if command is not None and not isinstance(command, g.Hint)
    }
    assert used == {*g.COMMANDS, "say"}
    assert sum(isinstance(command, g.Hint) for command in parsed) >= 8  # the mistakes
    aliases = {item.split()[0][1:] for item in SCRIPT if isinstance(item, str) and item.startswith("/")}
    assert {"who", "w", "m", "query"} <= aliases


async def test_every_slash_command_gives_the_same_result_in_both_front_ends() -> None:
    screen, plain = await run_full_screen(), await run_plain()
    typed = [item if isinstance(item, str) else "(bob writes in #ops)" for item in SCRIPT if item not in (OFFLINE, READY)]
    assert len(screen) == len(plain) == len(typed)
    for line, ui_step, plain_step in zip(typed, screen, plain, strict=True):
        where = f"after {line!r}"
        assert ui_step.calls == plain_step.calls, where
        assert ui_step.sent == plain_step.sent, where
        assert ui_step.current == plain_step.current, where
        assert ui_step.quit == plain_step.quit == (line == "/quit"), where
        if line == "/mouse":  # declared full-screen only
            assert ui_step.shown == [("*", "mouse off: the terminal selects text; PageUp/PageDown scroll")]
            assert ui_step.extra["mouse"] is False
            assert plain_step.shown == [("!", unavailable("mouse", g.PLAIN))]
            continue
        ui_shown, plain_shown = ui_step.shown, plain_step.shown
        if line == "/help":  # the same list; the key line is each front end's own
            tips_ui, tips_plain = len(KEY_TIPS[g.FULL_SCREEN]), len(KEY_TIPS[g.PLAIN])
            assert [text for _, text in ui_shown[-tips_ui:]] == list(KEY_TIPS[g.FULL_SCREEN])
            assert [text for _, text in plain_shown[-tips_plain:]] == list(KEY_TIPS[g.PLAIN])
            ui_shown, plain_shown = ui_shown[:-tips_ui], plain_shown[:-tips_plain]
        assert sorted(ui_shown) == sorted(plain_shown), where
        assert ui_shown or line in ("/clear", "/quit"), f"{where}: nothing was shown"


async def test_what_the_script_shows() -> None:
    """A few of the results spelled out, so that the front ends cannot agree on showing nothing."""
    typed = [item if isinstance(item, str) else "(bob writes in #ops)" for item in SCRIPT if item not in (OFFLINE, READY)]
    steps = await run_plain()

    def at(line: str, nth: int = 0) -> list[Shown]:
        return [step for text, step in zip(typed, steps, strict=True) if text == line][nth].shown

    assert at("hello?") == [("!", "no conversation yet: /to NAME to open one, or /msg NAME TEXT")]
    # Presence is known from the directory fetched at sign-in (nothing was shown for it).
    assert ("*", f"bob online: {' '.join([BOB_FP[:4]] * 16)} (unverified)") in at("/whois bob")
    assert ("*", f"pinned the key of carol: {' '.join(['ca20'] * 16)} (unverified)") in at("/w Carol")
    assert at("/whois Bad!")[0][1].startswith("'Bad!' is not a valid name")
    assert at("/to bob") == [
        ("msg", "bob", "old hello", ""),
        ("msg", "alice", "old reply", "delivered"),
        ("*", "talking to bob"),
    ]
    assert at("/to bob", 1) == [("*", "talking to bob")]  # the history once
    # ... and again after /clear emptied the window (issue 14, item 9).
    assert at("/to bob", 2)[0] == ("msg", "bob", "old hello", "")
    assert at("/to alice") == [("!", "that is you: /to is for someone else (/fingerprint shows your own key)")]
    assert at("/whois alice") == [
        ("!", "that is you: /whois is for someone else (/fingerprint shows your own key)")
    ]
    assert at("/to nobody") == [("!", "no such user: nobody (/users lists who is registered)")]
    assert at("/whois nobody") == [("!", "no such user: nobody (/users lists who is registered)")]
    assert at("after the msg") == [("msg", "alice", "after the msg", "delivered")]
    assert at("/verify bob 1234") == [
        ("!", "a fingerprint is 64 hex digits (spaces, colons and dashes are ignored)")
    ]
    alert = ("!", "the key of mallory changed: nothing is sent to them until you /trust mallory")
    assert alert in at("/whois mallory")
    assert at("/msg mallory still there?") == [
        (
            "!",
            (
                'not sent to mallory ("still there?"): the key of mallory changed; '
                "compare it (/whois mallory), then /trust mallory"
            ),
        )
    ]
    assert at("/query carol") == [("*", "talking to carol (offline: messages are queued)")]
    assert at("/whois bob", 1) == [
        ("*", f"bob: {' '.join([BOB_FP[:4]] * 16)} (verified)"),
        ("*", "(offline: that is what is pinned here; the server was not asked)"),
    ]
    assert at("/users", 1) == [("!", OFFLINE_USERS)]
    assert at("while offline") == [("msg", "alice", "while offline", "")]
    assert at("/msg dave hi") == [("!", f'not sent to dave ("hi"): {offline_first_message("dave")}')]
    # Rooms: the changes as verified, the refusals with their codes, delivery per member.
    assert at("/create #ops") == [("*", "alice created #ops (invite)"), ("*", "talking to #ops")]
    assert at("/add #ops bob") == [("*", "alice added bob to #ops")]
    # A mistyped member is said as for /to (it was "server error unknown_user: no user named 'nobody'").
    assert at("/add #ops nobody") == [("!", "no such user: nobody (/users lists who is registered)")]
    assert at("/members") == [("*", "#ops (invite, 3 members, as verified here): alice (admin), bob, carol")]
    assert at("/remove #ops bob") == [("!", "not_allowed: bob is an admin: an admin can only leave by themselves")]
    # A refusal reads "code: text" whether the server's answer or the rules checked here said it
    # (the server's read "server error room_full: ...").
    assert at("/join #full") == [("!", "room_full: #full has the most members it may have")]
    assert at("(bob writes in #ops)") == [("msg", "bob", "hello #ops", "")]
    assert at("/msg #ops from the room") == [("msg", "alice", "from the room", "delivered 1/1")]
    assert at("/msg #lobby anyone?")[0][1].startswith('not sent to #lobby ("anyone?"): not_member')
    assert at("/rooms", 1) == [("*", "2 rooms: #lobby (open, 0 members), #ops (invite, 2 members, including you)")]
    # Offline, a room message is sealed for the members held here and waits in the outbox.
    assert at("/msg #ops queued for the room") == [("msg", "alice", "queued for the room", "")]
    assert at("/to #ops") == [("*", "talking to #ops")]
