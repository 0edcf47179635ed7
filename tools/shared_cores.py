"""What sharing this machine's two cores costs one node on SQLite (a control for issue 11's CPU ratio; not a test).

The cross-node setup runs two nodes, Redis and the load generator on two cores, one node on SQLite only
the node and its load generator. This runs the one-node setup of the bench's ``nodes`` section
(:mod:`securechat.bench.nodes`) alone, then twice at once (two nodes, two load generators, each in its own
process), in each repetition, and gives the node CPU per message of each and their ratio. From the
repository root::

    python tools/shared_cores.py --reps 8     # about 5 minutes
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodes_compare import THROUGHPUT  # the same window as the cross-node comparisons

from securechat.bench import nodes
from securechat.bench.runner import KeyPool
from securechat.bench.servers import server_help

START_TIMEOUT = 120.0
RUN_TIMEOUT = 300.0


def one_setup(out: mp.Queue, go: mp.synchronize.Event) -> None:
    """A one-node setup under the bench's throughput load once ``go`` is set: puts (µs/msg, msg/s)."""
    setup = nodes.start_setup("sqlite-1-node", server_help(), 1000)
    try:
        out.put("ready")
        go.wait()
        r = nodes.throughput_run(setup, KeyPool(), 10, 2, THROUGHPUT)
        out.put((r["server_cpu_us_per_msg"], r["msgs_per_s"]))
    finally:
        setup.stop()


def at_once(count: int) -> list[tuple[float, float]]:
    """``count`` one-node setups measured in the same window."""
    out: mp.Queue = mp.Queue()
    go = mp.Event()
    procs = [mp.Process(target=one_setup, args=(out, go)) for _ in range(count)]
    for proc in procs:
        proc.start()
    for _ in procs:
        assert out.get(timeout=START_TIMEOUT) == "ready"
    go.set()
    results = [out.get(timeout=RUN_TIMEOUT) for _ in procs]
    for proc in procs:
        proc.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    mp.set_start_method("spawn")
    ratios = []
    for rep in range(args.reps):
        (alone, rate), = at_once(1)
        twins = at_once(2)
        ratio = statistics.mean(us for us, _ in twins) / alone
        ratios.append(ratio)
        shared = ", ".join(f"{us:.1f} µs/msg ({r:,.0f} msg/s)" for us, r in twins)
        print(f"rep {rep + 1}: alone {alone:.1f} µs/msg ({rate:,.0f} msg/s); two at once {shared}; {ratio:.2f}x", flush=True)
    print(f"two at once / alone, node CPU per message: median {statistics.median(ratios):.2f}x "
          f"({min(ratios):.2f}-{max(ratios):.2f}x)")


if __name__ == "__main__":
    main()
