"""Options that ``securechat-client`` and its subcommands share: given before or after the subcommand.

``securechat-client --name bob decrypt`` is ``securechat-client decrypt --name bob``:
the group records its options in a :class:`GroupOptions` on the context, and a
subcommand decorated with :func:`shared` takes each shared option from its own
command line, else from the group's. A group option that a subcommand does not
use is refused, never ignored, and so is one given twice with two values. A new
group option (``--plaintext``, ...) needs nothing here to be refused before a
subcommand that does not use it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import click

from .cli_common import UsageLine
from .cli_identity import own_name
from .client.home import default_home

HOME_ENV: Final = "SECURECHAT_HOME"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class GroupOptions:
    """The group's options, for the subcommands: their ``values``, and which were ``given`` on the line."""

    values: dict[str, Any] = field(default_factory=dict)
    given: frozenset[str] = frozenset()
    spelled: dict[str, str] = field(default_factory=dict)  # parameter name -> its option, as typed


def name_option(func: F) -> F:
    return click.option("--name", help="Your own name (lowercase); created with a new key on first use.")(
        func
    )


def _home_option(func: F) -> F:
    return click.option(
        "--home",
        type=click.Path(file_okay=False, path_type=Path),
        help=f"Where your keys and data live  [default: {default_home()}]",
    )(func)


def group_home_option(func: F) -> F:
    return click.option(
        "--home",
        type=click.Path(file_okay=False, path_type=Path),
        envvar=HOME_ENV,
        show_envvar=True,
        help=f"Where your keys and data live  [default: {default_home()}]",
    )(func)


# The options a subcommand shares with the chat, each declared once.
SHARED: Final[dict[str, Callable[[Any], Any]]] = {"name": name_option, "home": _home_option}
ANYWHERE: Final = frozenset({"verbose"})  # group options that every subcommand honours


def shared(*names: str) -> Callable[[F], F]:
    """Give a subcommand the chat's ``names`` options, taken before or after the subcommand's name."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            ctx = click.get_current_context()
            cfg = ctx.find_object(GroupOptions) or GroupOptions()
            for name in names:
                kwargs[name] = _merged(ctx, cfg, name, kwargs.get(name))
            unused = sorted(cfg.given - set(names) - ANYWHERE)
            if unused:
                shown = ", ".join(cfg.spelled.get(n, n) for n in unused)
                raise UsageLine(f"{shown} is for the chat; '{ctx.info_name}' does not use it")
            return func(*args, **kwargs)

        for name in reversed(names):
            run = SHARED[name](run)
        return cast(F, run)

    return decorate


def _merged(ctx: click.Context, cfg: GroupOptions, name: str, here: Any) -> Any:
    before = cfg.values.get(name)
    if here is not None and name in cfg.given and before != here:
        raise UsageLine(f"--{name} is given twice ({before} before '{ctx.info_name}', {here} after it)")
    value = here if here is not None else before
    if name == "name":
        if value is None:
            raise UsageLine(f"--name is required (securechat-client --name NAME {ctx.info_name} ...)")
        return own_name(value)
    return value
