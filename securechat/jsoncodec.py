"""The one strict JSON codec: frames, plaintexts and pasted payloads all parse here.

Strict means RFC 8259 plus the restrictions of docs/protocol.md section 2:
UTF-8 only, no duplicate keys, no ``NaN``/``Infinity``, no number that
overflows a double, no unpaired surrogate escape, bounded nesting. A body
that breaks any of them raises :class:`JSONRejected` naming the rule.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final


class JSONRejected(ValueError):
    """The bytes are not strict JSON; the message says which rule they break."""


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


_DECODER: Final = json.JSONDecoder(
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


def loads(data: bytes) -> Any:
    """Parse strict JSON from UTF-8 bytes; raise :class:`JSONRejected`."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONRejected(f"not valid UTF-8 (byte {exc.start})") from None
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise JSONRejected("JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, duplicate keys, NaN, int digit limit
        raise JSONRejected(f"not valid JSON ({exc})") from None
    # Escaped lone surrogates parse but can never be re-encoded as UTF-8; only an
    # escape starting \uD (either case) can be one, so most bodies skip the walk.
    if (b"\\ud" in data or b"\\uD" in data) and has_lone_surrogate(value):
        raise JSONRejected("a string holds an unpaired surrogate escape")
    return value


def dumps(obj: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON (``,`` and ``:`` without spaces, non-ASCII left as UTF-8)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
