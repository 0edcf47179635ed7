"""securechat.bench.redistail: the views tools/nodes_compare.py --tail reads the latency tail with."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import cast

import pytest

from securechat.bench import redistail
from securechat.bench.loadclient import LoadClient
from securechat.bench.worker import Worker
from tests.support.redisproc import RedisProcess


def test_split_takes_only_the_slow_messages_and_splits_them_at_the_senders_stamp() -> None:
    slow = [
        (0.0, 12.0, 1.0),  # slow: 1 ms before the sender's node, 11 after
        (1.0, 30.0, 20.0),  # slow: 20 before, 10 after
        (2.0, 10.0, 0.0),  # exactly the target: counted slow, 0 before, 10 after
        (3.0, 9.9, 9.0),  # under the target: not counted
        (4.0, 50.0, math.nan),  # no stamp found in the frame: not counted
    ]
    assert redistail.split(slow) == {"slow": 3.0, "before_stamp_ms": 1.0, "after_stamp_ms": 10.0}
    assert redistail.split(slow[3:]) == {"slow": 0.0}


def test_shares_split_the_window_into_cpu_waiting_for_a_core_the_disk_and_idle() -> None:
    probe = {"state_R": 60.0, "state_D": 30.0, "state_S": 10.0, "redis_cpu_s": 2.0, "redis_calls": 7.0}
    got = redistail.shares(probe, 5.0)
    assert got == pytest.approx({"cpu": 0.4, "waiting_for_a_core": 0.2, "waiting_for_the_disk": 0.3, "idle": 0.1})
    assert redistail.shares({"redis_cpu_s": 1.0}, 5.0) == {}  # nothing sampled: nothing said


@pytest.mark.parametrize(("code", "state"), [("while True: pass", "R"), ("import time; time.sleep(60)", "S")])
def test_the_sampler_reads_the_state_of_a_real_process(code: str, state: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", f"print('started', flush=True)\n{code}"], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"started\n"  # past the interpreter's start-up
        sampler = redistail.StateSampler(child.pid).start()
        deadline = time.monotonic() + 10
        while sum(sampler.counts().values()) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        sampler.stop()
        counts = sampler.counts()
        assert counts[f"state_{state}"] >= 0.8 * sum(counts.values()), counts
        assert {"state_R", "state_D", "state_S"} <= set(counts)  # every key at both ends of a window
    finally:
        child.kill()
        child.wait()


def test_worst_stalls_reads_redis_latency_monitor(make_redis: Callable[..., RedisProcess]) -> None:
    redis = make_redis()
    redistail.command(redis.port, "CONFIG", "SET", "latency-monitor-threshold", "1")
    # Scripts that keep Redis busy for 30 ms, then (the monitor keeps one sample a second) 5 ms in a later
    # second: the monitor's `command` event has its worst, not its latest.
    spin = "local t = redis.call('TIME'); local s = t[1] * 1e6 + t[2]; repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - s > %d"
    assert redistail.command(redis.port, "EVAL", spin % 30_000, "0").startswith(b"$-1")
    started, deadline = _redis_second(redis.port), time.monotonic() + 5
    while _redis_second(redis.port) == started and time.monotonic() < deadline:  # into the monitor's next sample
        time.sleep(0.01)
    assert redistail.command(redis.port, "EVAL", spin % 5_000, "0").startswith(b"$-1")
    stalls = redistail.worst_stalls(redis.port)
    assert 30 <= stalls["command"] < 100, stalls
    assert all(not name.startswith(("$", "*", ":")) for name in stalls), stalls
    redistail.command(redis.port, "LATENCY", "RESET")
    assert redistail.worst_stalls(redis.port) == {}


def _redis_second(port: int) -> bytes:
    return redistail.command(port, "TIME").split(b"\r\n")[2]


def test_the_load_generator_keeps_a_slow_message_with_its_time_and_where_the_senders_node_stamped_it() -> None:
    worker = Worker({"mode": "latency"}, [])
    worker.t_meas0_ns = 1_000_000_000
    now = worker.t_meas0_ns + 50_000_000
    fast_id, slow_id = b"a" * 32, b"b" * 32
    worker.sent_at[fast_id] = now - 1_000_000  # 1 ms: not kept
    sent = worker.t_meas0_ns + 20_000_000  # 20 ms into the window, 30 ms before `now`
    worker.sent_at[slow_id] = sent
    stamp_ms = (sent + worker.wall_minus_perf_ns) // 1_000_000 + 12  # the sender's node handled it ~12 ms after
    frame = b'{"type":"message","from":"alice","server_ts":%d,"envelope":{"v":1,"from":"alice","to":"bob","id":"%s","ts":1}}'
    assert worker._on_message(frame % (0, fast_id), now)
    assert worker._on_message(frame % (stamp_ms, slow_id), now)
    assert worker.latencies_us == [1000.0, 30000.0]
    ((at, latency, before),) = worker.slow
    assert (at, latency) == (20.0, 30.0)
    assert 11.0 <= before <= 12.0  # the stamp is whole ms


def test_the_load_generator_times_each_message_to_its_delivered_ack_and_nothing_else() -> None:
    worker = Worker({"mode": "latency"}, [])
    sender = SimpleNamespace(inflight=3)
    timed, early, unknown = b"c" * 32, b"d" * 32, b"e" * 32
    worker.ack_sent_at[timed] = time.perf_counter_ns() - 7_000_000  # sent in the window, 7 ms ago
    worker.ack_sent_at[early] = -1  # sent before the window: not timed
    ack = b'{"type":"ack","id":"%s","to":"bob","status":"%s"}'
    worker.on_frames(cast(LoadClient, sender), [ack % (timed, b"queued")])  # a `queued` ack is not the way back
    assert worker.ack_latencies_us == []
    frames = [ack % (msg_id, b"delivered") for msg_id in (timed, early, unknown)]
    worker.on_frames(cast(LoadClient, sender), frames)
    ((latency_us,),) = [worker.ack_latencies_us]
    assert latency_us >= 7000.0  # from its send (the clock the sends are stamped with), not from anything later
    assert worker.ack_sent_at == {}  # each send is timed once
    assert sender.inflight == 0
