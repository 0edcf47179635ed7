"""The slash-command parser and completion: pure functions, no terminal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securechat.names import NAME_PATTERN, is_valid_name
from securechat.ui import commands as c

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
    assert c.parse(line) == expected


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
        ("/users everyone", "/users takes no arguments"),
        ("/quit now", "/quit takes no arguments"),
    ],
)
def test_parse_hints(line: str, hint: str) -> None:
    result = c.parse(line)
    assert isinstance(result, c.Hint)
    assert hint in result.text
    assert "\n" not in result.text


def test_unknown_command_hint_is_bounded() -> None:
    result = c.parse("/" + "x" * 5000)
    assert isinstance(result, c.Hint)
    assert len(result.text) < 200


@given(st.text())
def test_parse_never_raises(line: str) -> None:
    result = c.parse(line)
    assert result is None or isinstance(result, (c.Hint, *c.Command.__args__))
    if isinstance(result, c.Hint):
        assert "\n" not in result.text or "/" in line


@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=40), st.text(min_size=1)
)
def test_msg_round_trip(name: str, text: str) -> None:
    result = c.parse(f"/msg {name} {text}")
    valid = is_valid_name(name)
    if valid and text.strip():
        assert result == c.Msg(name, text.lstrip(" "))
    else:
        assert isinstance(result, c.Hint)


def test_help_lists_every_command() -> None:
    text = "\n".join(c.help_lines())
    for usage, _ in c.COMMANDS.values():
        assert usage in text


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


@given(st.text(), st.lists(st.from_regex(NAME_PATTERN, fullmatch=True), max_size=5))
def test_completions_never_raise(before: str, names: list[str]) -> None:
    for _text, start in c.completions(before, names):
        assert -len(before) <= start <= 0


