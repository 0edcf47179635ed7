"""One command layer for the three front ends (full-screen UI, ``--plain``, ``--json``).

::

    grammar    typed lines and --json command objects -> Command values (or a Hint)
    executor   Executor: runs a Command over SessionAPI, holds the current conversation
    outcomes   what a command produced, for the front ends to render
    wording    the text both terminal front ends show, written once
    driver     stdin lines and the read loop that --plain and --json share

A front end only reads input, calls :meth:`Executor.execute` and
:meth:`Executor.observe`, and renders outcomes and session events.
"""

from __future__ import annotations

from securechat.commands.executor import Executor, Seen
from securechat.commands.grammar import Command, Hint, parse_json, parse_line

__all__ = ["Command", "Executor", "Hint", "Seen", "parse_json", "parse_line"]
