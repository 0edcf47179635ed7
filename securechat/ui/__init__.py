"""The full-screen terminal chat (prompt_toolkit); see :func:`run_chat_ui`.

Factory modules: ``state`` (pure screen state), ``render`` (state to styled
text), ``layout``, ``keybindings``, ``style``, and ``app`` (wires a session
to the application). The commands, their grammar and their wording are
:mod:`securechat.commands`, shared with ``--plain`` and ``--json``.
"""

from __future__ import annotations

from securechat.ui.app import ChatUI, run_chat_ui

__all__ = ["ChatUI", "run_chat_ui"]
