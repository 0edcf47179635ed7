"""The root of the one exception tree (the tree itself: :mod:`securechat.errors`)."""

from __future__ import annotations


class SecurechatError(Exception):
    """Root of every exception securechat raises on purpose."""
