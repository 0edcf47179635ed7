"""The live path's rules without I/O (securechat/server/livepath.py), rule by rule, and a model of a sender and a
recipient that checks the docstring's "Why order holds" over random interleavings.

The nodes' end of it, with real processes, is tests/test_nodes*.py.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from securechat.server.livepath import (
    LIVE_DEADLINE,
    PAIRS_KEPT,
    SENDERS_KEPT,
    STORE_MODE_MAX,
    LiveIn,
    LiveOut,
    LiveSend,
)
from securechat.server.store import QueuedMessage
from tests.support.rawclient import msg_id, raw_frame


def a_send(to: str, k: int, n: int, sent: float = 0.0) -> LiveSend:
    """The live send of message ``k`` from alice to ``to``, numbered ``n``."""
    frame = raw_frame(b"frame %d" % k)
    return LiveSend(QueuedMessage(to, "alice", msg_id(k), k, frame, 0.0), None, n, sent)


def go(out: LiveOut, to: str, k: int, now: float = 0.0) -> tuple[int, int] | None:
    """Message ``k`` to ``to``: numbered and sent live, or (None) marked stored. A test that stores one while its
    pair has sends unanswered calls ``before_store`` first, as LiveRoute.send does."""
    numbered = out.number(to, now)
    if numbered is None:
        out.stored(to, msg_id(k), now)
    else:
        out.sent(a_send(to, k, numbered[1], now))
    return numbered


def ids(sends: list[LiveSend]) -> list[int]:
    return [int(s.queued.msg_id, 16) for s in sends]


# --- LiveOut: the sender's side --------------------------------------------------------------------------


def test_a_pair_numbers_its_sends_from_1_within_an_epoch_of_its_own() -> None:
    out = LiveOut()
    assert [go(out, "bob", k) for k in (1, 2, 3)] == [(1, 1), (1, 2), (1, 3)]
    assert go(out, "carol", 4) == (2, 1)  # another pair: another epoch
    assert go(out, "bob", 5) == (1, 4)


def test_epochs_are_never_reused_within_a_session() -> None:
    out = LiveOut()
    epochs = []
    for k in range(1, 6):  # each refusal ends an epoch; the delivery of what it stored lets a new one begin
        for to in ("bob", "carol"):
            numbered = go(out, to, k)
            assert numbered is not None and numbered[1] == 1
            epochs.append(numbered[0])
            assert ids(out.refused(to, numbered[0], 0.0)) == [k]
            assert out.delivered(to, msg_id(k)) is None  # stored: no live frame to drop, but the store path ends
    assert sorted(set(epochs)) == epochs


def test_an_epoch_is_not_reused_after_its_pair_was_dropped() -> None:
    """A pair dropped past PAIRS_KEPT and made again starts an epoch no earlier pair had: a recipient session
    that remembers the old epoch would otherwise refuse the new 1 as a repeat, or, the new 1 lost, take the
    new 2 as the old epoch's next."""
    out = LiveOut()
    assert go(out, "bob", 0) == (1, 1)
    assert out.delivered("bob", msg_id(0)) is not None  # bob's pair is idle: the first to go
    for k in range(1, PAIRS_KEPT):
        assert go(out, f"u{k}", k) == (k + 1, 1)
        out.delivered(f"u{k}", msg_id(k))
    assert go(out, "carol", PAIRS_KEPT) == (PAIRS_KEPT + 1, 1)  # bob's pair dropped for carol's
    assert go(out, "bob", PAIRS_KEPT + 1) == (PAIRS_KEPT + 2, 1)  # bob's again: a new pair, a new epoch


def test_a_refusal_returns_every_unanswered_send_oldest_first_and_the_pair_goes_the_store_path() -> None:
    out = LiveOut()
    for k in (1, 2, 3, 4):
        go(out, "bob", k, now=float(k))
    go(out, "carol", 5)
    assert out.delivered("bob", msg_id(2)) is not None
    refused = out.refused("bob", 1, now=10.0)
    assert ids(refused) == [1, 3, 4] and [s.n for s in refused] == [1, 3, 4] and [s.sent for s in refused] == [1.0, 3.0, 4.0]
    assert out.number("bob", 10.0) is None  # the store path, until what it stored is delivered
    assert out.number("carol", 10.0) == (2, 2)  # another pair goes on


def test_a_second_refusal_of_an_epoch_returns_nothing() -> None:
    out = LiveOut()
    go(out, "bob", 1)
    go(out, "bob", 2)
    assert ids(out.refused("bob", 1, 0.0)) == [1, 2]
    assert out.refused("bob", 1, 0.0) == []
    assert out.refused("bob", 7, 0.0) == [] and out.refused("nobody", 1, 0.0) == []


def test_a_refusal_of_an_epoch_over_leaves_the_next_one_alone() -> None:
    out = LiveOut()
    go(out, "bob", 1)
    assert ids(out.refused("bob", 1, 0.0)) == [1]
    out.delivered("bob", msg_id(1))
    assert go(out, "bob", 2) == (2, 1)
    assert out.refused("bob", 1, 0.0) == []  # a late second X of epoch 1
    assert go(out, "bob", 3) == (2, 2)  # epoch 2 goes on live
    assert ids(out.refused("bob", 2, 0.0)) == [2, 3]


def test_the_store_path_lasts_until_the_last_send_stored_is_delivered() -> None:
    out = LiveOut()
    go(out, "bob", 1)
    go(out, "bob", 2)
    assert ids(out.refused("bob", 1, now=100.0)) == [1, 2]
    assert go(out, "bob", 3, now=101.0) is None  # stored: now the last one stored
    assert out.delivered("bob", msg_id(1)) is None  # stored, not live any more: no frame to drop
    assert out.delivered("bob", msg_id(2)) is None
    assert out.number("bob", 102.0) is None  # 3 is still to be delivered
    out.delivered("bob", msg_id(3))
    assert go(out, "bob", 4, now=102.0) == (2, 1)


def test_the_store_path_ends_after_store_mode_max_without_a_delivery() -> None:
    out = LiveOut()
    go(out, "bob", 1)
    out.refused("bob", 1, now=100.0)
    assert out.number("bob", 100.0 + STORE_MODE_MAX - 0.01) is None
    assert out.number("bob", 100.0 + STORE_MODE_MAX) == (2, 1)


def test_each_send_stored_restarts_the_store_paths_time() -> None:
    out = LiveOut()
    go(out, "bob", 1)
    out.refused("bob", 1, now=100.0)
    assert go(out, "bob", 2, now=105.0) is None
    assert out.number("bob", 100.0 + STORE_MODE_MAX) is None  # 2 was stored 5 s ago
    assert out.number("bob", 105.0 + STORE_MODE_MAX) == (2, 1)


def test_a_refusal_that_finds_nothing_unanswered_does_not_end_the_store_path() -> None:
    """An X late for sends stored already (overdue, or a gap of the pokes): the last of them is still to come."""
    out = LiveOut()
    go(out, "bob", 1)
    go(out, "bob", 2)
    assert ids(out.overdue(sent_before=1.0, now=6.0)) == [1, 2]
    assert out.refused("bob", 1, now=7.0) == []  # the X of epoch 1, late
    assert out.number("bob", 8.0) is None  # 2 is not delivered yet
    assert out.take_all(now=8.0) == [] and out.number("bob", 9.0) is None
    out.delivered("bob", msg_id(2))
    assert out.number("bob", 9.0) == (2, 1)


def test_a_send_that_goes_the_store_path_takes_the_pairs_unanswered_sends_before_it() -> None:
    """1 and 2 went live, then 3 goes the store path (its recipient looked offline, or the node held too much):
    1 and 2 must reach the queue before it, or a refusal of 2 would store it after 3."""
    out = LiveOut()
    go(out, "bob", 1)
    go(out, "bob", 2)
    go(out, "carol", 9)
    first = out.before_store("bob", now=1.0)
    assert ids(first) == [1, 2]
    out.stored("bob", msg_id(3), now=1.0)
    assert out.refused("bob", 1, now=2.0) == [] and out.before_store("bob", now=2.0) == []
    assert out.number("bob", 2.0) is None  # until 3 is delivered
    out.delivered("bob", msg_id(2))
    assert out.number("bob", 2.0) is None
    out.delivered("bob", msg_id(3))
    assert out.number("bob", 2.0) == (3, 1)
    assert out.before_store("nobody", now=2.0) == [] and ids(out.before_store("carol", now=2.0)) == [9]


def test_after_a_failed_publish_no_epoch_begins_while_the_pair_has_sends_unanswered() -> None:
    """1 went live and was heard; 2's publish failed. 2's resend may not go live in a new epoch while 1 is
    unanswered: a refusal of epoch 1 would then find it over and store nothing, and 1 would reach the queue
    only when overdue, after 2 was taken live."""
    out = LiveOut()
    go(out, "bob", 1)
    go(out, "bob", 2)
    assert out.failed("bob", msg_id(2)) is not None
    assert out.number("bob", 0.0) is None  # the resend goes the store path, after 1
    assert ids(out.before_store("bob", 0.0)) == [1]
    out.stored("bob", msg_id(2), 0.0)
    out.delivered("bob", msg_id(2))
    assert out.number("bob", 0.0) == (2, 1)


def test_a_delivered_send_leaves_its_pair() -> None:
    out = LiveOut()
    go(out, "bob", 1)
    go(out, "bob", 2)
    delivered = out.delivered("bob", msg_id(1))
    assert delivered is not None and ids([delivered]) == [1] and delivered.n == 1
    assert out.delivered("bob", msg_id(1)) is None  # twice: the second has nothing to drop
    assert out.delivered("carol", msg_id(1)) is None
    assert go(out, "bob", 3) == (1, 3)  # a delivery does not end the epoch
    assert ids(out.refused("bob", 1, 0.0)) == [2, 3]


def test_a_failed_publish_forgets_the_send_and_the_pair_stops_going_live() -> None:
    out = LiveOut()
    go(out, "bob", 1)
    failed = out.failed("bob", msg_id(1))
    assert failed is not None and ids([failed]) == [1]
    assert out.failed("bob", msg_id(1)) is None and out.failed("carol", msg_id(1)) is None
    assert out.refused("bob", 1, 0.0) == []  # forgotten: the client sends it again
    assert go(out, "bob", 2) == (2, 1)  # the resend: a new epoch


def test_overdue_takes_only_the_pairs_whose_oldest_send_is_late() -> None:
    out = LiveOut()
    go(out, "bob", 1, now=0.0)
    go(out, "bob", 2, now=4.0)
    go(out, "carol", 3, now=3.0)
    go(out, "dave", 4, now=2.0)  # exactly at the bound: not late
    go(out, "erin", 5, now=0.0)
    out.delivered("erin", msg_id(5))  # answered: nothing is late
    assert ids(out.overdue(sent_before=2.0, now=6.0)) == [1, 2]  # all of bob's, the one sent at 4 too
    assert out.number("bob", 6.0) is None
    assert out.number("carol", 6.0) == (2, 2) and out.number("dave", 6.0) == (3, 2) and out.number("erin", 6.0) == (4, 2)
    assert out.overdue(sent_before=2.0, now=6.0) == []


def test_take_all_refuses_every_pair_oldest_first_each() -> None:
    out = LiveOut()
    for k, to in enumerate(["bob", "carol", "bob", "dave", "carol"], 1):
        go(out, to, k)
    out.delivered("dave", msg_id(4))
    taken = out.take_all(now=1.0)
    assert sorted(ids(taken)) == [1, 2, 3, 5]
    for to in ("bob", "carol"):
        mine = [s for s in taken if s.queued.recipient == to]
        assert [s.n for s in mine] == sorted(s.n for s in mine)
    assert out.number("bob", 1.0) is None and out.number("carol", 1.0) is None
    assert out.number("dave", 1.0) == (4, 1)  # nothing of dave's was stored: a new epoch at once
    assert out.take_all(now=1.0) == []


def test_pairs_kept_keeps_the_pairs_with_sends_unanswered() -> None:
    out = LiveOut()
    for k in range(PAIRS_KEPT):
        assert go(out, f"u{k}", k) == (k + 1, 1)
    assert go(out, "bob", 1000) is None  # no pair is idle: bob's send is stored, and no pair is dropped
    out.delivered("u7", msg_id(7))  # u7's pair is idle now: the one to go
    assert go(out, "bob", 1001) == (PAIRS_KEPT + 1, 1)
    assert go(out, "carol", 1002) is None  # full again, none idle
    for k in range(PAIRS_KEPT):  # every unanswered send is still there, in its own epoch
        assert ids(out.refused(f"u{k}", k + 1, 0.0)) == ([] if k == 7 else [k])
    assert ids(out.refused("bob", PAIRS_KEPT + 1, 0.0)) == [1001]


# --- LiveIn: the recipient's side ------------------------------------------------------------------------


def admits(inn: LiveIn, epoch: int, numbers: list[int], can_take: bool = True, sender: bytes = b"alice", session: int = 1) -> list[bool]:
    return [inn.admit(sender, session, epoch, n, can_take) for n in numbers]


def test_the_first_of_an_epoch_must_be_1() -> None:
    inn = LiveIn()
    assert admits(inn, 1, [2, 1, 3]) == [False, False, False]  # and the rest of the epoch is refused
    assert admits(inn, 2, [1, 2, 3]) == [True, True, True]
    assert admits(inn, 1, [1], sender=b"bob") == [True]


def test_a_gap_refuses_the_rest_of_the_epoch_and_a_new_epoch_from_1_is_taken() -> None:
    inn = LiveIn()
    assert admits(inn, 3, [1, 2, 4, 3, 5]) == [True, True, False, False, False]
    assert admits(inn, 3, [2, 3]) == [False, False]  # a repeat of one taken, and the one missed
    assert admits(inn, 4, [2]) == [False]  # a new epoch must begin at 1 too
    assert admits(inn, 5, [1, 2]) == [True, True]


def test_a_repeat_of_a_number_taken_is_refused() -> None:
    inn = LiveIn()
    assert admits(inn, 1, [1, 2, 2, 3]) == [True, True, False, False]


def test_a_session_that_cannot_take_refuses_the_rest_of_the_epoch() -> None:
    inn = LiveIn()
    assert admits(inn, 1, [1]) == [True]
    assert admits(inn, 1, [2], can_take=False) == [False]
    assert admits(inn, 1, [3, 2]) == [False, False]  # it could now: still refused
    assert admits(inn, 2, [1], can_take=False) + admits(inn, 2, [1, 2]) == [False, False, False]
    assert admits(inn, 3, [1, 2]) == [True, True]


def test_an_older_epoch_is_refused_and_leaves_the_newer_alone() -> None:
    inn = LiveIn()
    assert admits(inn, 5, [1]) == [True]
    assert admits(inn, 4, [1]) + admits(inn, 4, [2]) == [False, False]
    assert admits(inn, 5, [2]) == [True]


def test_each_sender_session_has_its_own_epochs() -> None:
    inn = LiveIn()
    assert admits(inn, 1, [1, 2], session=1) == [True, True]
    assert admits(inn, 1, [1], session=2) == [True]  # alice's next session: its own numbers
    assert admits(inn, 1, [1], sender=b"bob") == [True]
    assert admits(inn, 1, [3], session=1) + admits(inn, 1, [2], session=2) + admits(inn, 1, [2], sender=b"bob") == [True] * 3


def test_senders_kept_forgets_the_longest_unheard_and_its_mid_epoch_message_is_refused() -> None:
    inn = LiveIn()
    assert admits(inn, 1, [1], sender=b"first") + admits(inn, 1, [1], sender=b"second") == [True, True]
    for k in range(SENDERS_KEPT - 2):
        assert admits(inn, 1, [1], sender=b"s%d" % k) == [True]
    assert admits(inn, 1, [2], sender=b"first") == [True]  # heard again: "second" is the longest unheard now
    assert admits(inn, 1, [1], sender=b"newcomer") == [True]  # one too many: "second" is forgotten
    assert admits(inn, 1, [2], sender=b"second") == [False]  # mid-epoch, forgotten: refused (its sender stores it)
    assert admits(inn, 1, [3], sender=b"first") == [True]
    assert admits(inn, 2, [1, 2], sender=b"second") == [True, True]


def test_a_sender_heard_in_a_new_epoch_is_not_the_longest_unheard() -> None:
    inn = LiveIn()
    assert admits(inn, 1, [1], sender=b"first") + admits(inn, 1, [1], sender=b"second") == [True, True]
    for k in range(SENDERS_KEPT - 2):
        assert admits(inn, 1, [1], sender=b"s%d" % k) == [True]
    assert admits(inn, 2, [1], sender=b"first") == [True]  # heard again, in its next epoch
    assert admits(inn, 1, [1], sender=b"newcomer") == [True]  # "second" is the one to go
    assert admits(inn, 2, [2], sender=b"first") == [True]
    assert admits(inn, 1, [2], sender=b"second") == [False]


def test_handed_confirmed_and_unconfirmed() -> None:
    inn = LiveIn()
    one, two, three = ("alice", msg_id(1)), ("alice", msg_id(2)), ("bob", msg_id(3))
    inn.handed(one, b"alice", 4, 7, b'"r1"')
    inn.handed(two, b"alice", 4, 7, b"")
    inn.handed(three, b"bob", 9, 2, b'"r 3"')
    assert inn.confirmed(one) == b'"r1"'
    assert inn.confirmed(one) is None  # once
    assert inn.confirmed(("carol", msg_id(1))) is None  # never handed out live: a stored copy
    assert inn.unconfirmed() == {(b"alice", 4, 7), (b"bob", 9, 2)}
    assert inn.unconfirmed() == set()  # forgotten with the session
    assert inn.confirmed(two) is None and inn.confirmed(three) is None
    inn.handed(two, b"alice", 4, 7, b"")
    assert inn.confirmed(two) == b"" and inn.unconfirmed() == set()


# --- Why order holds: a sender and a recipient, played at random ----------------------------------------

SEND, RECV, BACK, REPLY, READ, CONFIRM, TICK, GAP = "send", "recv", "back", "reply", "read", "confirm", "tick", "gap"
# A send's fate, when it may go live: heard, heard by nobody, failed (the client then sends its whole outbox
# again, as ours does, or only that one, as the protocol allows), or the store path (not online, or held full).
LIVE, UNHEARD, FAILED, STORE, FAILED_ONE = 0, 1, 2, 3, 4


class Pair:
    """One sender session (alice, a LiveOut) and one recipient session (bob, a LiveIn), and what is between them.

    Modelled, after livepath.py's "Why order holds":

    - ``wire``: what bob's node hears on bob's channel, in the order alice's node submitted it on its one
      Redis connection: an ``L`` per live send, an ``M`` per send stored (its queue position), a gap marker
      for a publish nobody heard (bob's node was not subscribed: when it is again, it reads the queue).
    - ``queue``: bob's queue in Redis, a FIFO list alice's node appends its stored sends to, oldest first.
    - ``back``: what alice's node hears on alice's channel from bob's node, in order: ``X`` (an epoch refused)
      and ``delivered``; ``replies``: the answers of alice's own publishes (one nobody heard is a refusal).
    - bob's node takes a live message only if LiveIn admits it, ``can_take`` being "read up to every stored
      message it heard of" (no read under way, nothing known waiting) and a random room in its window; it
      reads its queue in order; a poke lost to it (its subscriber broke) makes it read the whole queue.
    - bob's client drops a message it accepted before (``(from, id)``); what it accepts is ``accepted``.
    - alice's client keeps what is not acknowledged (``queued`` when stored, ``delivered``) in ``outbox``; a
      publish that failed (Redis out of reach) is forgotten by LiveOut, and its ``internal`` makes the client
      send its whole outbox again, in order, before anything new (a copy still unanswered is replaced), or
      only the failed one (all the node's SendOrder requires, docs/protocol.md: "Order across such a failure").

    Left out: several senders, sessions or nodes; the joining of one turn's sends into one ``L`` (each send
    is its own, numbered as the joined one would be); bob's session ending (``unconfirmed``) and its node's
    window as such (random refusals cover both); the recipient going offline (the directory, presence);
    the pokes' wire format (tests/test_pokes_live.py) and the real asyncio side (tests/test_nodes*.py).
    """

    def __init__(self) -> None:
        self.out, self.inn, self.now = LiveOut(), LiveIn(), 100.0
        self.next_k = 0
        self.outbox: list[int] = []
        self.resend: list[int] = []
        self.wire: list[tuple[str, int, int, int]] = []  # (kind, epoch or queue position, n, k)
        self.queue: list[int] = []
        self.read = self.known = 0
        self.back: list[tuple[str, int]] = []  # ("X", epoch) or ("D", k)
        self.replies: list[int] = []  # epochs whose publish nobody heard
        self.accepted: list[int] = []
        self.unconfirmed: list[int] = []

    # alice's node

    def send(self, fate: int) -> None:
        while self.resend and self.resend[0] not in self.outbox:  # acknowledged meanwhile: not due any more
            self.resend.pop(0)
        if self.resend:
            k = self.resend.pop(0)
        else:
            k, self.next_k = self.next_k, self.next_k + 1
            self.outbox.append(k)
        numbered = None if fate == STORE else self.out.number("bob", self.now)
        if numbered is None:  # as LiveRoute.send does it: what the pair has unanswered goes first
            self.store_all(self.out.before_store("bob", self.now))
            self.out.stored("bob", msg_id(k), self.now)
            self.store(k)
            return
        epoch, n = numbered
        self.out.sent(a_send("bob", k, n, self.now))
        if fate in (FAILED, FAILED_ONE):
            assert self.out.failed("bob", msg_id(k)) is not None
            self.resend = list(self.outbox) if fate == FAILED else [k]
        elif fate == UNHEARD:
            self.wire.append(("gap", 0, 0, 0))
            self.replies.append(epoch)
        else:
            self.wire.append(("L", epoch, n, k))

    def store(self, k: int) -> None:
        self.wire.append(("M", len(self.queue), 0, k))
        self.queue.append(k)
        self.acked(k)  # queued

    def acked(self, k: int) -> None:
        if k in self.outbox:
            self.outbox.remove(k)

    def store_all(self, sends: list[LiveSend]) -> None:
        for k in ids(sends):
            self.store(k)

    def hear_back(self, lost: bool) -> None:
        kind, value = self.back.pop(0)
        if lost:
            return
        if kind == "X":
            self.store_all(self.out.refused("bob", value, self.now))
        else:
            self.out.delivered("bob", msg_id(value))
            self.acked(value)

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.store_all(self.out.overdue(self.now - LIVE_DEADLINE, self.now))

    # bob's node

    def hear(self, lost: bool, room: bool) -> None:
        kind, value, n, k = self.wire.pop(0)
        if lost or kind == "gap":
            self.known = len(self.queue)  # it reads everything stored by now
        elif kind == "M":
            self.known = max(self.known, value + 1)
        elif self.inn.admit(b"alice", 1, value, n, self.read >= self.known and room):
            self.accept(k)
        else:
            self.back.append(("X", value))

    def read_queue(self) -> None:
        self.accept(self.queue[self.read])
        self.read += 1
        self.known = max(self.known, self.read)

    def accept(self, k: int) -> None:
        if k not in self.accepted:
            self.accepted.append(k)
        self.unconfirmed.append(k)

    def play(self, op: str, arg: int) -> None:
        if op == SEND:
            self.send(arg)
        elif op == RECV and self.wire:
            self.hear(lost=arg == 0, room=arg != 1)
        elif op == BACK and self.back:
            self.hear_back(lost=arg == 0)
        elif op == REPLY and self.replies:
            self.store_all(self.out.refused("bob", self.replies.pop(0), self.now))
        elif op == READ and self.read < self.known and arg != 0:
            self.read_queue()
        elif op == CONFIRM and self.unconfirmed:
            self.back.append(("D", self.unconfirmed.pop(arg % len(self.unconfirmed))))
        elif op == TICK:
            self.tick((1.0, 3.0, 6.0, 11.0, 0.5)[arg])
        elif op == GAP:
            self.store_all(self.out.take_all(self.now))

    def settle(self) -> None:
        """Nothing lost any more, time passing: until every send is stored or delivered, and bob read it all."""
        while self.resend:
            self.send(LIVE)
        for _ in range(1000):
            if self.wire:
                self.hear(lost=False, room=True)
            elif self.back:
                self.hear_back(lost=False)
            elif self.replies:
                self.play(REPLY, 1)
            elif self.read < len(self.queue):
                self.known = len(self.queue)
                self.read_queue()
            elif self.unconfirmed:
                self.play(CONFIRM, 0)
            else:  # what is still unanswered is overdue in a while
                stored = len(self.queue)
                self.tick(LIVE_DEADLINE + 1.0)
                if len(self.queue) == stored:
                    return
        raise AssertionError("the model does not settle")


OPS = st.tuples(st.sampled_from([SEND, SEND, SEND, RECV, RECV, RECV, BACK, BACK, REPLY, READ, READ, CONFIRM, TICK, GAP]), st.integers(0, 4))


@settings(max_examples=600)
@given(st.lists(OPS, max_size=80))
def test_each_senders_messages_reach_the_recipient_in_the_order_sent_and_all_of_them(ops: list[tuple[str, int]]) -> None:
    """Random interleavings of one sender and one recipient (see :class:`Pair` for what is modelled), with random
    refusals, lost pokes, publishes nobody heard, failed publishes, time passing and gaps: the messages the
    recipient accepts, a duplicate dropped, are in send order at every step, and once everything is stored or
    delivered they are all there."""
    pair = Pair()
    for op, arg in ops:
        pair.play(op, arg)
        assert pair.accepted == sorted(pair.accepted), (op, arg)
    pair.settle()
    assert pair.accepted == list(range(pair.next_k))
    assert pair.out.take_all(pair.now) == []
