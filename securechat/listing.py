"""The directory's frames: ``list`` asks for one page of names, ``users`` is that page (docs/protocol.md section 4).

A page holds at most :data:`LIST_PAGE` names in name order; ``more`` says
whether names follow its last one (ask again with ``after`` set to it), and
``prefix`` keeps to the names that start with it. A server before paging sends
every name with no ``more``: a client reads that as the whole directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from .errors import BadRequest
from .names import NAME_RULE, is_valid_name

LIST_PAGE: Final = 200  # names in one `users` answer at most


def check_list(frame: Mapping[str, Any]) -> None:
    """A ``list``'s optional ``after`` (the paging cursor) and ``prefix``: each a name when present."""
    for key in ("after", "prefix"):
        if key in frame and not is_valid_name(frame[key]):
            raise BadRequest(f"list '{key}' must be a name ({NAME_RULE})")


def check_users(frame: Mapping[str, Any]) -> None:
    """A ``users`` answer's fields, as a client relies on them."""
    users = frame.get("users")
    if not isinstance(users, list):
        raise BadRequest("users 'users' must be a list")
    for entry in users:
        if not isinstance(entry, dict) or not is_valid_name(entry.get("name")):
            raise BadRequest("each user needs a valid 'name'")
        if type(entry.get("online")) is not bool:
            raise BadRequest("each user needs a boolean 'online'")
    if type(frame.get("more", False)) is not bool:
        raise BadRequest("users 'more' must be a boolean")
