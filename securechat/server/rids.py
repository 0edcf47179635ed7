"""A send's rid as the nodes store and publish it beside the message (redis_lua's ``rid`` argument).

Every cross-node message's rid is written once by the sender's node (:func:`rid_text`, into the
``enqueue`` script and again into the ``confirm``) and read once or twice by another node
(:func:`rid_about`, from the ``M`` and ``A`` pokes), so the usual rid, a short run of ASCII letters and
digits, is written and read without the JSON codec; the text is the same as the codec's either way.
"""

from __future__ import annotations

import json
from typing import Final

from ..names import is_valid_room

_QUOTES: Final = ('"', b'"')


def rid_text(rid: str | None, room: str | None = None) -> str:
    """A send's rid as stored and published: its JSON, or empty for none (a rid may be the empty string); a room
    message's copy carries its room too, as ``[room, rid]``, so that its acks name the room and the member."""
    if room is not None:
        return json.dumps([room, rid], ensure_ascii=False)
    if rid is None:
        return ""
    if rid.isalnum() and rid.isascii():  # nothing JSON would escape
        return f'"{rid}"'
    return json.dumps(rid, ensure_ascii=False)


def rid_about(text: bytes | str) -> tuple[str | None, str | None]:
    """The rid and the room (None for a one-to-one message) of :func:`rid_text`'s text; ``ValueError`` for anything
    else (other nodes write it, and the room goes into the sender's ``ack`` frame as it is)."""
    if not text:
        return None, None
    inner = text[1:-1]
    if text[:1] in _QUOTES and text[-1:] in _QUOTES and inner.isalnum() and inner.isascii():
        return inner.decode() if isinstance(inner, bytes) else inner, None
    value = json.loads(text)
    if isinstance(value, str):
        return value, None
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], str | None) and is_valid_room(value[0]):
        return value[1], value[0]
    raise ValueError(f"not a rid, nor a room and a rid: {str(text)[:80]!r}")
