"""The directory: registered names and their keys, as the server consults them.

The store holds the bindings; a name's fingerprint is cached once seen, since a
binding never changes. Only the fingerprint: the PEM (for ``lookup``) is read
from the store, keeping about 0.6 KiB per name out of memory.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from ..crypto import public_key_pem
from ..listing import LIST_PAGE
from .registration import NewName
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

    async def bind(self, name: str, key: RSAPublicKey, fingerprint: str, asker: NewName) -> tuple[str, bool]:
        """Register ``name`` with ``key`` unless it is registered; returns its fingerprint and whether it is new.

        A new name spends ``asker``'s registration tokens (:class:`~securechat.errors.RegistrationRefused`).
        """
        known = self._fingerprints.get(name)
        if known is not None:
            return known, False
        reg, new = await self._store.register(name, public_key_pem(key), fingerprint, asker)
        self._fingerprints[name] = reg.fingerprint
        return reg.fingerprint, new

    async def page(self, after: str, prefix: str) -> tuple[list[str], bool]:
        """One page of names (docs/protocol.md section 4, ``list``) and whether more follow it."""
        names = await self._store.names_page(after, prefix, LIST_PAGE + 1)
        return names[:LIST_PAGE], len(names) > LIST_PAGE
