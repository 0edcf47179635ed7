"""The directory: registered names and their keys, as the server consults them.

The store holds the bindings; a name's fingerprint is cached once seen, since a
binding never changes. Only the fingerprint: the PEM (for ``lookup``) is read
from the store, keeping about 0.6 KiB per name out of memory.
"""

from __future__ import annotations

import asyncio

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from ..crypto import public_key_pem
from .store import MessageStore, Registration


class Directory:
    """Names, keys and fingerprints over a :class:`MessageStore`."""

    def __init__(self, store: MessageStore) -> None:
        self._store = store
        self._fingerprints: dict[str, str] = {}

    def knows(self, name: str) -> bool:
        """True if ``name`` is known to be registered (without asking the store)."""
        return name in self._fingerprints

    async def registration(self, name: str) -> Registration | None:
        """``name``'s binding, or None if it is not registered."""
        reg = await self._store.get_registration(name)
        if reg is not None:
            self._fingerprints[name] = reg.fingerprint
        return reg

    async def bind(self, name: str, key: RSAPublicKey, fingerprint: str) -> tuple[str, bool]:
        """Register ``name`` with ``key`` unless it is registered; returns its fingerprint and whether it is new."""
        known = self._fingerprints.get(name)
        if known is not None:
            return known, False
        reg, new = await self._store.register(name, public_key_pem(key), fingerprint)
        self._fingerprints[name] = reg.fingerprint
        return reg.fingerprint, new

    def names(self) -> asyncio.Future[list[str]]:
        """Every registered name, sorted."""
        return self._store.list_names()
