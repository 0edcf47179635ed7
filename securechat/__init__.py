"""securechat: end-to-end encrypted chat in the terminal, over plain TCP."""

from __future__ import annotations

__version__ = "0.1.0"
