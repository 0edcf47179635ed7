"""The strict codec's two implementations against a reference, on the same inputs (a fuzz target).

``jsoncodec.loads`` runs the standard library's scanner with a duplicate
proof by counting, or orjson (``securechat[fast]``) with the proofs that make
its verdict the strict one. Both must accept exactly what the reference
accepts (the plain duplicate-key hook, the finite-float and constant hooks,
the surrogate walk and the depth bound, written out here on their own) and
return equal values, types included. Inputs: arbitrary bytes, JSON texts from
several encoders, texts with duplicate keys, and texts with the edge cases
that split parsers spliced in (big and long integers, overflowing floats,
surrogate escapes, BOM, control characters, bad UTF-8, deep nesting).

``tools/fuzz.sh`` runs these with 10,000 examples each.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securechat import jsoncodec
from securechat.jsoncodec import MAX_DEPTH, JSONRejected
from tests.support.values import same

# --- the reference: the rules of docs/protocol.md section 2, one by one -----------------------


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError("duplicate key")
    return dict(pairs)


def _finite(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise ValueError("overflow")
    return value


def _constant(token: str) -> Any:
    raise ValueError(token)


_REFERENCE = json.JSONDecoder(object_pairs_hook=_unique, parse_float=_finite, parse_constant=_constant)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def reference(data: bytes) -> Any:
    """Strict JSON as docs/protocol.md defines it, the slow and obvious way; raise ValueError."""
    value = _REFERENCE.decode(data.decode("utf-8"))  # RecursionError is a failure too, caught below
    if _depth(value) > MAX_DEPTH:
        raise ValueError("too deep")
    for text in _strings(value):
        text.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError, a ValueError
    return value


def verdict(loads: Callable[[bytes], Any], data: bytes) -> tuple[bool, Any]:
    try:
        return True, loads(data)
    except JSONRejected:
        return False, None
    except (ValueError, RecursionError) as exc:
        if loads is reference:
            return False, None
        raise AssertionError(f"{loads} raised {exc!r}, not JSONRejected") from None


IMPLEMENTATIONS: dict[str, Callable[[bytes], Any]] = {"stdlib": jsoncodec._loads_stdlib}
if jsoncodec._ORJSON_LOADS is not None:
    IMPLEMENTATIONS["orjson"] = jsoncodec._loads_orjson


def check_agreement(data: bytes) -> None:
    ok, expected = verdict(reference, data)
    for name, loads in IMPLEMENTATIONS.items():
        got_ok, got = verdict(loads, data)
        assert got_ok == ok, f"{name} {'accepts' if got_ok else 'rejects'} {data[:80]!r}; the reference does not"
        if ok:
            assert same(got, expected), f"{name} reads {data[:80]!r} as {got!r}, not {expected!r}"
    assert verdict(jsoncodec.loads, data)[0] == ok


def test_both_implementations_run_here() -> None:
    """The [fast] extra is installed in the development environment: its codec must be the one tested."""
    pytest.importorskip("orjson")
    assert "orjson" in IMPLEMENTATIONS


# --- inputs --------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=10,
)


def encoded(value: Any, ascii_only: bool, spaced: bool) -> bytes:
    separators = (", ", ": ") if spaced else (",", ":")
    return json.dumps(value, ensure_ascii=ascii_only, separators=separators).encode("utf-8", "surrogatepass")


texts = st.builds(encoded, values, st.booleans(), st.booleans())

# Pairs whose keys may repeat, written out by hand (no encoder writes a duplicate).
objects_with_repeats = st.lists(st.tuples(st.sampled_from(["a", "b", "type", ""]), scalars), max_size=5).map(
    lambda pairs: ("{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}").encode()
)

EDGES = [
    b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999", b"1E308", b"1.7976931348623157e308",
    b"2.5e-324", b"1e-400", b"-0", b"-0.0", b"0.1", b"01", b"1.", b".5", b"1e", b"+1", b"0x10", b"1_000",
    str(2**63 - 1).encode(), str(2**63).encode(), str(2**64 - 1).encode(), str(2**64).encode(),
    str(-(2**63)).encode(), str(-(2**63) - 1).encode(), b"9" * 25, b"9" * 4300, b"9" * 4301, b"-" + b"9" * 4301,
    b'"\\ud800"', b'"\\uDC00"', b'"\\ud83d\\ude00"', b'"\\ude00\\ud83d"', b'"\\\\ud800"', b'"\\u0000"', b'"\\x41"',
    b'"\\/"', b'"\t"', b'"\x7f"', b'"\x00"', b"\xef\xbb\xbf", b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\xc3\xa9",
    b"\xe0\x80\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xc3", b"\xef\xbf\xbf", b"\xf0\x9f\x98\x80",
    b"\xe2\x80\xa8", b"\xc2\xa0", b"\x0b", b"\x0c", b" ", b"\t", b"\n", b"\r", b"true", b"tru", b"nul", b"null",
    b"[", b"]", b"{", b"}", b",", b":", b'"', b"\\", b"[]", b"{}", b'{"a":1,"a":2}', b'{"a":{"b":1,"b":1}}',
    b'"a:b"', b'{"x:":1}', b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1),
    b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
    b'{"a":' * MAX_DEPTH + b"1" + b"}" * MAX_DEPTH, b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1),
    b"[" * 2000 + b"]" * 2000,
]  # fmt: skip


@st.composite
def spliced(draw: st.DrawFn) -> bytes:
    """A JSON text with edge cases put in at random places (usually no longer JSON, sometimes still)."""
    data = bytearray(draw(texts | objects_with_repeats))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        piece = draw(st.sampled_from(EDGES))
        end = at + draw(st.integers(0, 3))  # sometimes replacing a few bytes
        data[at:end] = piece
    return bytes(data)


@st.composite
def wrapped(draw: st.DrawFn) -> bytes:
    """An edge case as a whole value, or as a value inside an object or array (still JSON when it was)."""
    piece = draw(st.sampled_from(EDGES))
    shape = draw(st.sampled_from([b"%s", b'{"k":%s}', b"[1,%s]", b'{"a":[%s],"b":"c:d"}', b" %s\n", b'"x%sy"', b'{"%s":0}']))
    return shape % piece


@given(st.binary(max_size=64))
def test_arbitrary_bytes(data: bytes) -> None:
    check_agreement(data)


@given(texts)
def test_encoder_output(data: bytes) -> None:
    check_agreement(data)


@given(objects_with_repeats)
def test_objects_with_repeated_keys(data: bytes) -> None:
    check_agreement(data)


@given(spliced())
def test_spliced_edge_cases(data: bytes) -> None:
    check_agreement(data)


@given(wrapped())
def test_wrapped_edge_cases(data: bytes) -> None:
    check_agreement(data)


@pytest.mark.parametrize("piece", EDGES, ids=lambda p: repr(p[:24]))
def test_each_edge_case(piece: bytes) -> None:
    for shape in (b"%s", b'{"k":%s}', b"[%s]", b'"%s"', b'{"%s":0}'):
        check_agreement(shape % piece)


@pytest.mark.parametrize(
    "data, rule",
    [
        (b'{"a":1,"a":2}', "duplicate"),
        (b'{"x":NaN}', "NaN"),
        (b'{"x":1e400}', "overflows"),
        (b'{"x":"\\ud800"}', "surrogate"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "deeper than 256"),
        (b"\xff", "UTF-8"),
    ],
)
def test_the_reason_names_the_rule(data: bytes, rule: str) -> None:
    for loads in IMPLEMENTATIONS.values():
        with pytest.raises(JSONRejected, match=rule):
            loads(data)


def test_values_and_types_are_the_strict_ones() -> None:
    data = b'{"big":18446744073709551616,"neg":-9223372036854775809,"f":1.5,"i":1,"t":true,"s":"\\u00e9:"}'
    for loads in IMPLEMENTATIONS.values():
        value = loads(data)
        assert same(value, {"big": 2**64, "neg": -(2**63) - 1, "f": 1.5, "i": 1, "t": True, "s": "é:"})


def _keys(value: Any) -> int:
    if isinstance(value, dict):
        return len(value) + sum(_keys(v) for v in value.values())
    if isinstance(value, list):
        return sum(_keys(v) for v in value)
    return 0


def _has_float(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return type(value) is float


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_the_shape_of_a_value_is_its_keys_depth_and_floats(value: Any) -> None:
    """The one walk behind the duplicate-key, depth and float proofs (the orjson path needs the floats; it only
    pushes containers since a room message's 100 wrapped keys made it a third of the frame's parse): the same
    keys, depth and floats as the slow definitions, with or without the text's nesting seen."""
    data = json.dumps(value).encode()
    assert jsoncodec._shape(data, value) == (_keys(value), _depth(value), _has_float(value))
