"""The name and fingerprint rules (securechat/names.py), the one place they are written."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securechat.errors import InvalidFingerprint, InvalidName, UsageError
from securechat.names import (
    format_fingerprint,
    is_valid_name,
    parse_fingerprint,
    parse_typed_name,
    short_fingerprint,
)

FP = "0123456789abcdef" * 4


@pytest.mark.parametrize("name", ["a", "alice", "a" * 32, "0day", "bob_the-2nd"])
def test_valid_names(name: str) -> None:
    assert is_valid_name(name)
    assert parse_typed_name(name) == name


@pytest.mark.parametrize("value", ["", "a" * 33, "_x", "-x", "Alice", "al ice", "alice\n", "ålice", None, 3, b"a"])
def test_invalid_names(value: object) -> None:
    assert not is_valid_name(value)


def test_typed_names_are_stripped_and_lowercased() -> None:
    assert parse_typed_name("  Alice ") == "alice"


@pytest.mark.parametrize("typed", ["", "bob!", "../etc", "a" * 33, "ẞob", "b\u202eob"])
def test_invalid_typed_name_is_a_local_error_that_quotes_it(typed: str) -> None:
    with pytest.raises(InvalidName) as info:
        parse_typed_name(typed)
    assert isinstance(info.value, UsageError)
    assert info.value.code == "invalid_name"
    assert "is not a valid name" in str(info.value)


def test_a_long_typed_name_is_cut_in_the_message() -> None:
    with pytest.raises(InvalidName) as info:
        parse_typed_name("x" * 10_000)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(
    "typed",
    [FP, FP.upper(), format_fingerprint(FP), ":".join(FP[i : i + 2] for i in range(0, 64, 2)), "\t" + FP + "\n",
     "-".join(FP[i : i + 4] for i in range(0, 64, 4))],
)
def test_fingerprints_as_people_copy_them(typed: str) -> None:
    assert parse_fingerprint(typed) == FP


@pytest.mark.parametrize("typed", ["", FP[:-1], FP + "0", "g" * 64, "٠" * 64, "ａ" * 64, FP[:-1] + "é"])
def test_bad_fingerprints_are_an_input_error(typed: str) -> None:
    with pytest.raises(InvalidFingerprint):
        parse_fingerprint(typed)


@given(st.text(max_size=100))
def test_parse_fingerprint_never_raises_anything_else(text: str) -> None:
    try:
        parse_fingerprint(text)
    except InvalidFingerprint:
        pass


def test_fingerprint_shapes() -> None:
    assert format_fingerprint(FP).split() == [FP[i : i + 4] for i in range(0, 64, 4)]
    assert short_fingerprint(FP) == "0123 4567"
    assert short_fingerprint(None) == "?"


# --- room names (docs/protocol.md section 11.1) ---------------------------------------------


@pytest.mark.parametrize("room", ["#a", "#ops", "#" + "a" * 32, "#0day", "#dev_ops-2"])
def test_valid_rooms(room: str) -> None:
    from securechat.names import is_room, is_valid_room, parse_typed_room, parse_typed_target

    assert is_valid_room(room) and not is_valid_name(room)
    assert parse_typed_room(room) == room == parse_typed_target(room)
    assert is_room(room)


@pytest.mark.parametrize("value", ["", "#", "ops", "##ops", "#Ops", "#" + "a" * 33, "#_x", "# ops", "#ops\n", None, 3])
def test_invalid_rooms(value: object) -> None:
    from securechat.names import is_valid_room

    assert not is_valid_room(value)


def test_typed_rooms_and_targets() -> None:
    from securechat.errors import InvalidRoomName
    from securechat.names import is_room, parse_typed_room, parse_typed_target

    assert parse_typed_room("  #Ops ") == "#ops"
    assert parse_typed_target(" Bob ") == "bob" and not is_room("bob")
    with pytest.raises(InvalidRoomName) as info:
        parse_typed_target("#no way")
    assert info.value.code == "invalid_name" and "'#no way'" in str(info.value)
    with pytest.raises(InvalidName):
        parse_typed_target("no way")


@given(st.text(max_size=40))
def test_a_name_is_never_a_room_nor_the_reverse(text: str) -> None:
    from securechat.names import is_valid_room

    assert not (is_valid_name(text) and is_valid_room(text))
    assert is_valid_room("#" + text) == is_valid_name(text)
