"""How the full-screen pane copes with huge messages (docs/performance.md, "The full-screen pane").

Feeds the real ``ChatState`` and ``MessagePane`` what a session hands over for eight 1 MiB
messages full of line breaks (the text and its ~1.4 MB payload), drawing the pane after each
event as the UI does, then ``/help``'s answer (one event and one redraw per line), and prints
the time of each step and the process's peak RSS. Run from the repository root:

    python tools/measure_pane.py [--count 8] [--size 1048576]
"""

from __future__ import annotations

import argparse
import resource
import time

from securechat.commands.wording import help_lines
from securechat.events import MessageReceived
from securechat.ui.layout import MessagePane
from securechat.ui.state import ChatState


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--size", type=int, default=2**20)
    args = parser.parse_args()
    state = ChatState(own_name="alice", fingerprint="a1ce" * 16)
    state.switch("mallory")
    pane = MessagePane(state)
    pane.create_content(80, 24)
    before = peak_mib()
    start = time.perf_counter()
    for i in range(args.count):
        text, payload = "\n" * args.size, "A" * (args.size * 4 // 3)
        state.apply(MessageReceived("mallory", f"{i:032x}", int(time.time() * 1000), text, payload))
        del text, payload  # the session's event is gone once applied
        pane.create_content(80, 24)
    received = time.perf_counter() - start
    start = time.perf_counter()
    for line in help_lines("full-screen"):
        state.info(line)
        pane.create_content(80, 24)
    helped = time.perf_counter() - start
    rows = len(pane.rows())
    print(f"{args.count} messages of {args.size:,} line breaks: {received:.2f} s to receive and draw")
    print(f"/help ({len(help_lines('full-screen'))} lines, a redraw each): {helped:.3f} s")
    print(f"pane rows: {rows:,}; peak RSS {before:.0f} MiB before, {peak_mib():.0f} MiB after")


if __name__ == "__main__":
    main()
