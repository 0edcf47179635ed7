"""The command grammar: typed lines and --json command lines into the same values; completion."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securechat.commands import grammar as c
from securechat.commands.rooms import Leave, Members
from securechat.commands.wording import help_lines
from securechat.names import NAME_PATTERN, is_valid_name

FP = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("hello", c.Say("hello")),
        ("  spaced  ", c.Say("  spaced  ")),
        ("//etc/passwd is a path", c.Say("/etc/passwd is a path")),
        ("line one\nline two", c.Say("line one\nline two")),
        ("/msg bob hi there", c.Msg("bob", "hi there")),
        ("/MSG Bob  two  spaces", c.Msg("bob", "two  spaces")),
        ("/m bob hi", c.Msg("bob", "hi")),
        ("/msg bob multi\nline", c.Msg("bob", "multi\nline")),
        ("/to bob", c.To("bob")),
        ("/query Bob", c.To("bob")),
        ("/users", c.Users()),
        ("/users +", c.Users(more=True)),
        ("/users Al", c.Users("al")),
        ("/who", c.Users()),
        ("/whois carol", c.Whois("carol")),
        ("/fingerprint", c.Fingerprint()),
        ("/trust bob", c.Trust("bob")),
        ("/verify bob " + FP, c.Verify("bob", FP)),
        ("/verify bob " + " ".join(FP[i : i + 4] for i in range(0, 64, 4)).upper(), c.Verify("bob", FP)),
        ("/verify bob " + ":".join(FP[i : i + 2] for i in range(0, 64, 2)), c.Verify("bob", FP)),
        ("/raw", c.Raw()),
        ("/clear", c.Clear()),
        ("/help", c.Help()),
        ("/mouse", c.Mouse()),
        ("/quit", c.Quit()),
        ("/exit", c.Quit()),
        ("", None),
        ("   ", None),
    ],
)
def test_parse(line: str, expected: object) -> None:
    assert c.parse_line(line) == expected


@pytest.mark.parametrize(
    ("line", "hint"),
    [
        ("/nope", "unknown command /nope"),
        ("/", "unknown command /"),
        ("/msg", "usage: /msg NAME TEXT"),
        ("/msg bob", "usage: /msg NAME TEXT"),
        ("/msg bob    ", "usage: /msg NAME TEXT"),
        ("/msg BAD! hi", "'BAD!' is not a valid name"),
        ("/to", "usage: /to NAME"),
        ("/to bob carol", "usage: /to NAME"),
        ("/to " + "x" * 33, "is not a valid name"),
        ("/whois", "usage: /whois NAME"),
        ("/trust", "usage: /trust NAME"),
        ("/verify bob", "usage: /verify NAME FINGERPRINT"),
        ("/verify bob abc", "a fingerprint is 64 hex digits"),
        ("/verify bob " + "g" * 64, "a fingerprint is 64 hex digits"),
        ("/users a b", "'a b' is not a valid name (a-z, 0-9, '_' and '-', starting with a letter or digit, 1 to 32 characters)"),
        ("/quit now", "/quit takes no arguments"),
    ],
)
def test_parse_hints(line: str, hint: str) -> None:
    result = c.parse_line(line)
    assert isinstance(result, c.Hint)
    assert hint in result.text
    assert "\n" not in result.text


def test_unknown_command_hint_is_bounded() -> None:
    result = c.parse_line("/" + "x" * 5000)
    assert isinstance(result, c.Hint)
    assert len(result.text) < 200


@given(st.text())
def test_parse_never_raises(line: str) -> None:
    result = c.parse_line(line)
    assert result is None or isinstance(result, (c.Hint, *c.Command.__args__))
    if isinstance(result, c.Hint):
        assert "\n" not in result.text or "/" in line


@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=40), st.text(min_size=1)
)
def test_msg_round_trip(name: str, text: str) -> None:
    result = c.parse_line(f"/msg {name} {text}")
    valid = is_valid_name(name)
    if valid and text.strip():
        assert result == c.Msg(name, text.lstrip(" "))
    else:
        assert isinstance(result, c.Hint)


@pytest.mark.parametrize("front_end", [c.FULL_SCREEN, c.PLAIN])
def test_help_lists_every_command(front_end: c.FrontEnd) -> None:
    text = "\n".join(help_lines(front_end))
    for spec in c.COMMANDS.values():
        assert spec.usage in text
    assert "full-screen only: toggle mouse" in text


NAMES = ["bob", "bobby", "carol"]


@pytest.mark.parametrize(
    ("before", "expected"),
    [
        ("/", [f"/{name}" for name in c.COMMANDS]),
        ("/wh", ["/whois"]),
        ("/T", ["/to", "/trust"]),
        ("/to b", ["bob", "bobby"]),
        ("/to bob", ["bobby"]),
        ("/msg ca", ["carol"]),
        ("/verify b", ["bob", "bobby"]),
        ("/msg carol hi b", []),  # the text, not a name
        ("/users b", []),
        ("/raw ", []),
        ("hi ca", ["carol"]),
        ("C", ["carol"]),
    ],
)
def test_completions(before: str, expected: list[str]) -> None:
    got = c.completions(before, NAMES)
    assert [text for text, _ in got] == expected
    for _text, start in got:
        assert -len(before) <= start <= 0


def test_completion_replaces_the_current_word() -> None:
    assert c.completions("/to bo", NAMES) == [("bob", -2), ("bobby", -2)]
    assert c.completions("/wh", NAMES) == [("/whois", -3)]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/leave", Leave(None)),  # the current conversation's room, as for /members
        ("/leave #Ops", Leave("#ops")),
        ("/members", Members(None)),
        ("/members #ops", Members("#ops")),
    ],
)
def test_leave_and_members_take_an_optional_room(line: str, expected: c.Command) -> None:
    assert c.parse_line(line) == expected


def test_leave_with_two_rooms_is_a_usage_hint() -> None:
    hint = c.parse_line("/leave #ops #dev")
    assert isinstance(hint, c.Hint) and "/leave [#ROOM]" in hint.text


# alice (admin) and dave (admin) hold #ops with bob and carol; erin and frank are not in it.
OPS = {"#ops": c.Seats(("alice", "bob", "carol", "dave"), ("alice", "dave"))}
PEOPLE = ["#ops", "bob", "carol", "dave", "erin", "frank"]


@pytest.mark.parametrize(
    ("before", "me", "expected"),
    [
        # Found as a new user: Tab after "/remove #ops " offered yourself and the admins, whom the
        # rules (docs/protocol.md 11.3) let nobody remove: only the members you can remove.
        ("/remove #ops ", "alice", ["bob", "carol"]),
        ("/remove #ops c", "alice", ["carol"]),
        ("/admin #ops ", "alice", ["bob", "carol"]),  # already admins are not made admins again
        ("/add #ops ", "alice", ["erin", "frank"]),  # known users who are not members
        ("/ADD #OPS e", "alice", ["erin"]),
        # Only an admin signs add, remove and admin: a member who is not one is offered nobody.
        ("/remove #ops ", "bob", []),
        ("/admin #ops ", "bob", []),
        ("/add #ops ", "bob", []),
        # A room not held here: its members are not known, so anyone known.
        ("/remove #dev ", "alice", ["bob", "carol", "dave", "erin", "frank"]),
    ],
)
def test_room_member_completions_offer_whom_you_may_name(before: str, me: str, expected: list[str]) -> None:
    assert [text for text, _ in c.completions(before, PEOPLE, OPS, me)] == expected


@pytest.mark.parametrize(
    ("before", "expected"),
    [
        ("/leave #", ["#dev", "#ops"]),  # the rooms you are in, not #lobby that /rooms listed
        ("/add #", ["#ops"]),  # the rooms you are an admin of (not #dev: a member only)
        ("/remove #", ["#ops"]),
        ("/admin #", ["#ops"]),
        ("/join #", ["#lobby"]),  # the rooms you are not in
        ("/create #", []),  # a new room's name is yours to choose
        ("/members #", ["#dev", "#ops"]),  # #lobby's members are not known here: 'you hold no room'
        ("/to #", ["#dev", "#lobby", "#ops"]),
    ],
)
def test_each_room_command_completes_the_rooms_it_may_name(before: str, expected: list[str]) -> None:
    # Found as a new user: /leave # offered rooms alice had left and open rooms she was never in.
    rooms = {**OPS, "#dev": c.Seats(("alice", "bob"), ("bob",))}
    assert [text for text, _ in c.completions(before, ["#dev", "#lobby", "#ops", "bob"], rooms, "alice")] == expected


@given(st.text(), st.lists(st.from_regex(NAME_PATTERN, fullmatch=True), max_size=5))
def test_completions_never_raise(before: str, names: list[str]) -> None:
    for _text, start in c.completions(before, names):
        assert -len(before) <= start <= 0


# --- --json command lines: the same values --------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"cmd":"send","to":"bob","text":"hi","extra":1}\n', c.Msg("bob", "hi")),
        (b'{"cmd":"send","to":"Bob","text":"  kept  "}', c.Msg("bob", "  kept  ")),
        (b'{"cmd":"list"}', c.Users()),
        (b'{"cmd":"list","prefix":"a","after":"amy"}', c.Users("a", "amy")),
        (b'{"cmd":"whois","name":"Carol"}', c.Whois("carol")),
        (b'{"cmd":"trust","name":"bob"}', c.Trust("bob")),
        (b'{"cmd":"verify","name":"bob","fingerprint":"' + FP.upper().encode() + b'"}', c.Verify("bob", FP)),
        (b'{"cmd":"quit"}', c.Quit()),
    ],
)
def test_parse_json(line: bytes, expected: c.Command) -> None:
    assert c.parse_json(line) == expected


def test_json_and_typed_lines_give_the_same_values() -> None:
    pairs = [
        (b'{"cmd":"send","to":"bob","text":"hi there"}', "/msg bob hi there"),
        (b'{"cmd":"list"}', "/users"),
        (b'{"cmd":"whois","name":"bob"}', "/whois bob"),
        (b'{"cmd":"trust","name":"bob"}', "/trust bob"),
        (b'{"cmd":"verify","name":"bob","fingerprint":"' + FP.encode() + b'"}', f"/verify bob {FP}"),
        (b'{"cmd":"quit"}', "/quit"),
    ]
    for json_line, typed in pairs:
        command = c.parse_json(json_line)
        assert command == c.parse_line(typed)
        assert c.json_name(command) == json_line.split(b'"')[3].decode()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("line", "code", "cmd"),
    [
        (b'{"cmd":"send","to":"Not A Name!","text":"x"}', "invalid_name", "send"),
        (b'{"cmd":"whois","name":""}', "invalid_name", "whois"),
        (b'{"cmd":"verify","name":"bob","fingerprint":"abc"}', "invalid_fingerprint", "verify"),
        (b'{"cmd":"verify","name":"B B","fingerprint":"abc"}', "invalid_name", "verify"),
        (b'{"cmd":"launch"}', "bad_command", None),
        (b'{"cmd":"send","to":"bob"}', "bad_command", None),
    ],
)
def test_json_mistakes_are_local(line: bytes, code: str, cmd: str | None) -> None:
    hint = c.parse_json(line)
    assert isinstance(hint, c.Hint)
    assert (hint.code, hint.cmd) == (code, cmd)
    assert hint.text and "\n" not in hint.text


def test_typed_value_mistakes_carry_their_code() -> None:
    assert c.parse_line("/whois BAD!") == c.Hint(
        "'BAD!' is not a valid name (a-z, 0-9, '_' and '-', starting with a letter or digit, 1 to 32 characters)",
        "invalid_name",
    )
    hint = c.parse_line("/verify bob 12")
    assert isinstance(hint, c.Hint) and hint.code == "invalid_fingerprint"


def test_every_slash_command_has_a_parser_and_only_known_front_ends() -> None:
    for name, spec in c.COMMANDS.items():
        assert spec.usage.startswith(f"/{name}")
        assert spec.only in (None, c.FULL_SCREEN, c.PLAIN)
        assert not isinstance(c.parse_line(spec.usage.split()[0]), c.Hint) or " " in spec.usage
    for alias, name in c.ALIASES.items():
        assert name in c.COMMANDS and alias not in c.COMMANDS


def test_every_command_value_names_its_command() -> None:
    for name in c.COMMANDS:
        usage = c.COMMANDS[name].usage.replace("NAME", "bob").replace("TEXT", "hi").replace("#ROOM", "#ops")
        usage = usage.replace("[", "").replace("]", "")  # an optional word, given
        command = c.parse_line(usage.replace("FINGERPRINT", FP))
        assert not isinstance(command, c.Hint) and command is not None
        assert c.slash_name(command) == name
