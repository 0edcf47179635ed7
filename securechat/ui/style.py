"""Colours: a stable one per name, a warning colour, and none under NO_COLOR."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

from prompt_toolkit.output import ColorDepth
from prompt_toolkit.styles import Style

# Red and its neighbours are kept for warnings, so no name can look like one.
NAME_COLOURS = (
    "ansigreen",
    "ansiyellow",
    "ansiblue",
    "ansimagenta",
    "ansicyan",
    "ansibrightgreen",
    "ansibrightblue",
    "ansibrightmagenta",
    "ansibrightcyan",
    "ansibrightyellow",
)

COLOUR_RULES = {
    "time": "fg:ansibrightblack",
    "own": "bold",
    "text": "",
    "info": "fg:ansibrightblack",
    "hint": "fg:ansiyellow",
    "warn": "fg:ansired bold",
    "rejected": "fg:ansired bold",
    "status-tag": "fg:ansibrightblack",
    "status-tag.failed": "fg:ansired",
    "payload": "fg:ansibrightblack",
    "banner": "bg:ansired fg:ansiwhite bold",
    "statusbar": "reverse",
    "statusbar.online": "fg:ansigreen reverse",
    "statusbar.connecting": "fg:ansiyellow reverse",
    "statusbar.reconnecting": "fg:ansiyellow reverse",
    "statusbar.offline": "fg:ansired reverse",
    "statusbar.unread": "bold reverse",
    "statusbar.scrolled": "bold reverse",
    "statusbar.plaintext": "fg:ansired bold reverse",
    "prompt": "bold",
}

# Monochrome: only attributes, so rejected lines and banners still stand out.
MONO_RULES = {
    "own": "bold",
    "warn": "bold",
    "rejected": "bold reverse",
    "banner": "reverse bold",
    "statusbar": "reverse",
    "statusbar.unread": "bold reverse",
    "statusbar.scrolled": "bold reverse",
    "statusbar.plaintext": "bold reverse",
    "prompt": "bold",
}


def no_color(environ: Mapping[str, str] | None = None) -> bool:
    """True when NO_COLOR is set to a non-empty value (https://no-color.org)."""
    env = os.environ if environ is None else environ
    return bool(env.get("NO_COLOR"))


def name_class(name: str) -> str:
    """The style class of ``name``: the same colour in every session and on every machine."""
    # Python's str hash is salted per process; a digest is stable.
    index = hashlib.sha256(name.encode("utf-8")).digest()[0] % len(NAME_COLOURS)
    return f"class:nick.c{index}"


def build_style(monochrome: bool) -> Style:
    if monochrome:
        return Style(list(MONO_RULES.items()))
    rules = list(COLOUR_RULES.items())
    rules += [(f"nick.c{i}", f"fg:{colour} bold") for i, colour in enumerate(NAME_COLOURS)]
    return Style(rules)


def color_depth(monochrome: bool) -> ColorDepth | None:
    """None lets prompt_toolkit pick from the terminal."""
    return ColorDepth.DEPTH_1_BIT if monochrome else None
