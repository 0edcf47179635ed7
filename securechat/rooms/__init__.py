"""Rooms: group conversations whose membership is a signed, hash-chained log (docs/protocol.md section 11).

The pure parts, shared by the server and the client (one place per rule):

- :mod:`~securechat.rooms.log`: the entry format, its signed bytes and head,
  the state, and the rules that turn a state and an entry into the next state;
- :mod:`~securechat.rooms.envelope`: the room envelope's structure and the
  receiver's checks that need no key;
- :mod:`~securechat.rooms.sealing`: signing and verifying entries, sealing
  and opening room envelopes (the primitives of :mod:`securechat.crypto`);
- :mod:`~securechat.rooms.frames`: the field checks of the room frames.
"""
