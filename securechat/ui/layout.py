"""The screen: key-change banners, message pane, status bar, input line."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prompt_toolkit.application.current import get_app
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.layout import (
    ConditionalContainer,
    Float,
    FloatContainer,
    FormattedTextControl,
    HSplit,
    Layout,
    UIContent,
    UIControl,
    Window,
)
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.mouse_events import MouseEvent, MouseEventType
from prompt_toolkit.widgets import TextArea

from securechat.commands.grammar import completions
from securechat.ui.render import RowCache, banner, pane_rows, status_bar
from securechat.ui.state import STATUS_WINDOW, ChatState

if TYPE_CHECKING:
    from prompt_toolkit.key_binding.key_bindings import NotImplementedOrNone

WHEEL_ROWS = 3
# A long paste scrolls inside the input line instead of pushing the pane away.
INPUT_MAX_ROWS = 6


class MessagePane(UIControl):
    """The scrolling message pane.

    It wraps lines itself so it knows how many rows there are: ``top`` is the
    first row shown, None while following the newest line.  Rows are only
    ever appended below, so a fixed ``top`` keeps the view still while the
    user reads history and new messages arrive.
    """

    def __init__(self, state: ChatState) -> None:
        self.state = state
        self.top: int | None = None
        self.width = 80
        self.height = 20
        self._cache_key: tuple[int, int, str, bool] | None = None
        self._rows: list[StyleAndTextTuples] = []
        self._line_rows: RowCache = weakref.WeakKeyDictionary()

    def rows(self, width: int | None = None) -> list[StyleAndTextTuples]:
        width = self.width if width is None else width
        key = (self.state.generation, width, self.state.current, self.state.show_raw)
        if key != self._cache_key:
            self._rows = pane_rows(self.state, width, self._line_rows)
            self._cache_key = key
        return self._rows

    def _first_row(self, total: int) -> int:
        bottom = max(0, total - self.height)
        if self.top is None or self.top >= bottom:
            return bottom
        return self.top

    def create_content(self, width: int, height: int) -> UIContent:
        self.width, self.height = max(width, 1), max(height, 1)
        rows = self.rows(self.width)
        first = self._first_row(len(rows))
        if first >= max(0, len(rows) - self.height):
            self.top = None
        view = rows[first : first + self.height]
        return UIContent(get_line=lambda i: view[i], line_count=len(view), show_cursor=False)

    @property
    def scrolled(self) -> bool:
        return self.top is not None and self.top < max(0, len(self.rows()) - self.height)

    def scroll(self, delta: int) -> None:
        """Move the view by ``delta`` rows (negative: back in history)."""
        total = len(self.rows())
        bottom = max(0, total - self.height)
        top = min(max(0, self._first_row(total) + delta), bottom)
        self.top = None if top >= bottom else top

    def page_up(self) -> None:
        self.scroll(-max(1, self.height - 1))

    def page_down(self) -> None:
        self.scroll(max(1, self.height - 1))

    def follow(self) -> None:
        self.top = None

    def is_focusable(self) -> bool:
        return False

    def mouse_handler(self, mouse_event: MouseEvent) -> NotImplementedOrNone:
        if mouse_event.event_type == MouseEventType.SCROLL_UP:
            self.scroll(-WHEEL_ROWS)
            return None
        if mouse_event.event_type == MouseEventType.SCROLL_DOWN:
            self.scroll(WHEEL_ROWS)
            return None
        return NotImplemented


class ChatCompleter(Completer):
    """Slash commands; user names, rooms and a room's members where each fits."""

    def __init__(self, names: Callable[[], list[str]], state: ChatState) -> None:
        self.names = names
        self.state = state

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        state = self.state
        for text, start in completions(document.text_before_cursor, self.names(), state.rooms, state.own_name):
            yield Completion(text, start_position=start)


def build_input(state: ChatState, accept: Callable[[str], None], names: Callable[[], list[str]]) -> TextArea:
    def prompt() -> StyleAndTextTuples:
        where = state.current if state.current != STATUS_WINDOW else "status"
        return [("class:prompt", f"[{where}] ")]

    def on_accept(buffer: Buffer) -> bool:
        accept(buffer.text)
        return False  # clear the line

    return TextArea(
        prompt=prompt,
        multiline=True,
        wrap_lines=True,
        height=Dimension(min=1, max=INPUT_MAX_ROWS),
        dont_extend_height=True,
        completer=ChatCompleter(names, state),
        complete_while_typing=False,
        accept_handler=on_accept,
        history=InMemoryHistory(),  # Up/Down recall; never written to disk
        focus_on_click=True,
    )


def build_layout(state: ChatState, pane: MessagePane, input_area: TextArea) -> Layout:
    banner_window = Window(
        FormattedTextControl(lambda: banner(state)),
        wrap_lines=True,
        dont_extend_height=True,
        style="class:banner",
    )
    body = HSplit(
        [
            ConditionalContainer(banner_window, filter=Condition(lambda: bool(state.banners))),
            Window(pane, wrap_lines=False),
            Window(
                FormattedTextControl(lambda: status_bar(state, pane.scrolled, get_app().output.get_size().columns)),
                height=1,
                style="class:statusbar",
            ),
            input_area,
        ]
    )
    root = FloatContainer(
        content=body,
        floats=[Float(xcursor=True, ycursor=True, content=CompletionsMenu(max_height=8, scroll_offset=1))],
    )
    return Layout(root, focused_element=input_area)
