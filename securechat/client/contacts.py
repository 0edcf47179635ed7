"""Trust on first use: what a key from the server means, and what the user decides.

docs/protocol.md section 4, "Directory and trust": the first key seen for a name
is pinned; a different key later is never pinned silently, it raises the
key-change alarm (:class:`~securechat.events.KeyChangedAlert`) and waits for the
user's ``trust`` or ``verify``. The session's ``lookup``, the inbox (first
contact) and the outbox (first message to someone) all go through here.
"""

from __future__ import annotations

from ..errors import BadKey, KeyChanged
from ..events import ContactPinned, EventListener, KeyChangedAlert
from ..records import ContactInfo
from .state import ClientStore, Pin


class Contacts:
    """The pins of one identity, with the events their changes cause."""

    def __init__(self, store: ClientStore, emit: EventListener) -> None:
        self._pins = store.pins
        self._emit = emit

    def pinned(self, name: str) -> Pin | None:
        return self._pins.get(name)

    def info(self, name: str) -> ContactInfo:
        return self._pins.info(name)

    def alert(self, pin: Pin) -> None:
        self._emit(KeyChangedAlert(pin.name, pin.fingerprint, pin.pending_fingerprint or ""))

    def presented(self, name: str, pubkey_pem: str) -> ContactInfo:
        """The server presents ``pubkey_pem`` for ``name``: pin it on first sight, alert if it changed.

        Raises :class:`~securechat.errors.BadKey` for a key that is not acceptable.
        """
        existed = self._pins.get(name) is not None
        try:
            pin = self._pins.pin(name, pubkey_pem)
        except KeyChanged:
            changed = self._pins.get(name)
            if changed is not None:
                self.alert(changed)
        else:
            if not existed:
                self._emit(ContactPinned(name, pin.fingerprint, pin.trust))
        return self._pins.info(name)

    def bundled(self, name: str, pubkey_pem: str) -> None:
        """A key that came with a room's log: pinned on first sight without a line per member (a room may
        hold 256), a differing key still raises the alarm; an unusable key is ignored."""
        try:
            self._pins.pin(name, pubkey_pem)
        except KeyChanged:
            changed = self._pins.get(name)
            if changed is not None:
                self.alert(changed)
        except BadKey:
            pass

    def trust(self, name: str) -> None:
        """Accept the pending changed key of ``name``."""
        before = self._pins.get(name)
        pin = self._pins.trust(name)
        if pin is not None and before is not None and before.trust == "changed":
            self._emit(ContactPinned(name, pin.fingerprint, pin.trust))

    def verify(self, name: str, fingerprint: str) -> bool:
        """Mark ``name`` verified if ``fingerprint`` matches the pinned key; False if not."""
        before = self._pins.get(name)
        ok = self._pins.verify(name, fingerprint)
        pin = self._pins.get(name)
        if (
            ok
            and pin is not None
            and (before is None or before.trust != "verified" or before.fingerprint != pin.fingerprint)
        ):
            self._emit(ContactPinned(name, pin.fingerprint, pin.trust))
        return ok
