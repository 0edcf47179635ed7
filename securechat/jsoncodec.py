"""The one strict JSON codec: frames, plaintexts and pasted payloads all parse here.

Strict means RFC 8259 plus the restrictions of docs/protocol.md section 2:
UTF-8 only, no duplicate keys, no ``NaN``/``Infinity``, no number that
overflows a double, no integer of more than 4,300 digits, no unpaired
surrogate escape, at most :data:`MAX_DEPTH` levels of nesting. A body that
breaks any of them raises :class:`JSONRejected` naming the rule.

:func:`loads` is the one entry point, with two implementations behind it that
accept exactly the same texts and return equal values:

- the standard library's C scanner, without a Python hook per object: a text
  is proven free of duplicate keys when its ``:`` bytes (an upper bound on
  its key-value pairs) are as many as the keys parsed; only a text where they
  differ (a duplicate, or a colon inside a string) is parsed again with the
  duplicate-key hook, which then decides;
- ``orjson`` (the ``securechat[fast]`` extra) when it is installed and
  ``SECURECHAT_JSON`` is not ``stdlib``. It validates UTF-8 as strictly as
  Python and refuses lone surrogate escapes; its acceptance is used only
  when it is provably the strict one (no float anywhere, since orjson turns
  integers beyond 64 bits into floats, and the same duplicate and depth
  proofs). Every other text, and every text orjson refuses, goes to the
  standard-library path, which decides. ``tests/test_jsoncodec.py`` runs both
  on the same inputs and checks they agree.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Any, Final


class JSONRejected(ValueError):
    """The bytes are not strict JSON; the message says which rule they break."""


# No frame of the protocol needs more than 4 levels; the parsers' own limits are higher
# (about 1,000), so this bound is the one both implementations enforce.
MAX_DEPTH: Final = 256


def _reject_constant(token: str) -> Any:
    raise ValueError(f"non-standard JSON constant {token}")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key in JSON object")
    return obj


def _finite_float(token: str) -> float:
    # "1e400" is valid JSON grammar but parses to inf, which re-encodes as the
    # non-standard "Infinity" a strict peer rejects: a frame forwarded with it
    # would kill the recipient's connection.
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"number {token[:20]} overflows a double")
    return value


# The C scanner builds dicts itself; duplicates are found by counting (see the docstring).
_SCANNER: Final = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
# The authority on duplicate keys: a Python hook per object, used only when counting cannot prove.
_HOOKED: Final = json.JSONDecoder(
    object_pairs_hook=_unique_object, parse_constant=_reject_constant, parse_float=_finite_float
)


def has_lone_surrogate(value: Any) -> bool:
    """True if any string in ``value`` holds an unpaired UTF-16 surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _walk(value: Any) -> tuple[int, int, bool]:
    """(keys in all objects, nesting depth, any float) of a parsed value."""
    keys = depth = 0
    floats = False
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        kind = type(item)
        if kind is dict:
            keys += len(item)
            items = item.values()
        elif kind is list:
            items = item
        else:
            floats = floats or kind is float
            continue
        depth = max(depth, level)
        # Only containers go on the stack (a room message's 100 wrapped keys are strings).
        for v in items:
            inner = type(v)
            if inner is dict or inner is list:
                stack.append((v, level + 1))
            elif inner is float:
                floats = True
    return keys, depth, floats


def _nested(data: bytes) -> bool:
    """True unless the text holds at most one ``{`` or ``[`` (the top level): found at the second one."""
    brace, bracket = data.find(b"{"), data.find(b"[")
    if brace >= 0 and bracket >= 0:
        return True
    first, char = (brace, b"{") if brace >= 0 else (bracket, b"[")
    return first >= 0 and data.find(char, first + 1) >= 0


def _shape(data: bytes, value: Any) -> tuple[int, int, bool]:
    """:func:`_walk`, without the walk when the text holds at most one object or array (the top level)."""
    if _nested(data):
        return _walk(value)
    kind = type(value)
    if kind is dict:
        return len(value), 1, float in map(type, value.values())
    if kind is list:
        return 0, 1, float in map(type, value)
    return 0, 0, kind is float


def _rejected(exc: ValueError) -> JSONRejected:
    return JSONRejected(f"not valid JSON ({exc})")


def _loads_stdlib(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONRejected(f"not valid UTF-8 (byte {exc.start})") from None
    try:
        value = _SCANNER.decode(text)
    except RecursionError:
        raise JSONRejected(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, NaN, an overflowing float, the int digit limit
        raise _rejected(exc) from None
    keys, depth, _ = _shape(data, value)
    if depth > MAX_DEPTH:
        raise JSONRejected(f"JSON nested deeper than {MAX_DEPTH} levels")
    if keys != data.count(b":"):  # a duplicate key, or a colon inside a string: the hook decides
        try:
            value = _HOOKED.decode(text)
        except ValueError as exc:
            raise _rejected(exc) from None
    # Escaped lone surrogates parse but can never be re-encoded as UTF-8; only an
    # escape starting \uD (either case) can be one, so most bodies skip the walk.
    # A backslash is one byte to look for: most bodies (base64 and names) have none at all.
    if b"\\" in data and (b"\\ud" in data or b"\\uD" in data) and has_lone_surrogate(value):
        raise JSONRejected("a string holds an unpaired surrogate escape")
    return value


def _orjson_loads() -> Callable[[bytes], Any] | None:
    if os.environ.get("SECURECHAT_JSON", "") == "stdlib":
        return None
    try:
        module = importlib.import_module("orjson")  # optional: securechat[fast]
    except ImportError:
        return None
    loads: Callable[[bytes], Any] = module.loads
    return loads


_ORJSON_LOADS: Final = _orjson_loads()


def _loads_orjson(data: bytes) -> Any:
    assert _ORJSON_LOADS is not None
    try:
        value = _ORJSON_LOADS(data)
    except ValueError:  # orjson.JSONDecodeError: the strict path gives the verdict and the reason
        return _loads_stdlib(data)
    keys, depth, floats = _shape(data, value)
    if floats or depth > MAX_DEPTH or keys != data.count(b":"):
        return _loads_stdlib(data)
    return value


CODEC: Final = "orjson" if _ORJSON_LOADS is not None else "stdlib"
_LOADS: Final = _loads_orjson if _ORJSON_LOADS is not None else _loads_stdlib


def loads(data: bytes) -> Any:
    """Parse strict JSON from UTF-8 bytes; raise :class:`JSONRejected` (:data:`CODEC` says which parser runs)."""
    return _LOADS(data)


# What json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False) builds on every
# call, built once: the same encoder, without its construction per frame.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(obj: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON (``,`` and ``:`` without spaces, non-ASCII left as UTF-8)."""
    return _ENCODER.encode(obj).encode("utf-8")
