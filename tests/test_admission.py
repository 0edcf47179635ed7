"""The token bucket of each connection's rates (securechat/server/admission.py)."""

from __future__ import annotations

from securechat.server.admission import TokenBucket


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(10.0, 5, now=100.0)
    assert all(bucket.take(100.0) for _ in range(5)) and not bucket.take(100.0)
    assert bucket.take(100.25) and bucket.take(100.25) and not bucket.take(100.25)  # 0.25 s at 10 a second
    assert all(bucket.take(200.0) for _ in range(5)) and not bucket.take(200.0)  # never more than the burst
    assert bucket.take(200.5, 5) and not bucket.take(200.5, 0.5)  # a charge of several at once


def test_an_earlier_time_than_the_last_takes_nothing_away() -> None:
    """A connection takes each frame's token at its read's decode time, but charges a room message to many
    members at a fresh clock reading, when its handler runs, which may be a second later when stores are
    slow; the next frames of that read come at the earlier time again. That must not drain the bucket: it
    took ``rate`` tokens per second of the difference (at the bench's rate of a million a second, all of
    them: its room fan-out to 100 members had its sends dropped as rate_limited and stalled)."""
    bucket = TokenBucket(200.0, 400, now=0.0)
    assert bucket.take(5.0, 6)  # the charge, when the room message's handler ran
    assert all(bucket.take(4.0) for _ in range(394))  # the same read's next frames: every token is there
    assert not bucket.take(4.0)
