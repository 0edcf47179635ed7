"""Pasted payloads as people copy them: split over lines by a terminal, a mail client, or several arguments.

The payload itself (``b64`` of the envelope's JSON, docs/protocol.md section 8)
is :func:`securechat.crypto.encode_payload` / :func:`~securechat.crypto.decode_payload`;
this module only finds where each payload starts and ends in what was pasted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from .crypto import decode_payload
from .encoding import b64decode
from .errors import MalformedEnvelope


def is_whole(text: str) -> bool:
    """True if ``text`` (no whitespace) is a complete payload: base64 of a JSON object."""
    try:
        # Cheap first: the last quantum of a whole payload decodes to the JSON's closing brace.
        if len(text) % 4 or not b64decode(text[-4:]).endswith(b"}"):
            return False
        decode_payload(text)
    except (ValueError, MalformedEnvelope):
        return False
    return True


def split_pasted(lines: Iterable[str]) -> list[str]:
    """The payloads in pasted text, however it was broken into lines (docs/protocol.md section 8).

    Lines join until they make a whole payload; a blank line also ends one, and
    a line that is a whole payload by itself starts a new one. What never
    becomes whole is returned as it is, for :func:`decode_payload` to say why.
    """
    found: list[str] = []
    pending = ""
    for line in lines:
        piece = "".join(line.split())
        if not piece:
            if pending:
                found.append(pending)
            pending = ""
            continue
        if pending and is_whole(piece):
            found.append(pending)
            pending = ""
        pending += piece
        if is_whole(pending):
            found.append(pending)
            pending = ""
    if pending:
        found.append(pending)
    return found


def write_payloads(path: str, payloads: Iterable[str]) -> str:
    """Write ``payloads`` one per line to a new file at ``path`` (mode 0600); returns the path as given.

    Never overwrites: an existing file raises :class:`FileExistsError`.
    """
    target = os.path.expanduser(path)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.writelines(payload + "\n" for payload in payloads)
    return path
