"""Keys beyond prompt_toolkit's Emacs defaults: send, scroll, quit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prompt_toolkit.filters import Condition, has_completions
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

if TYPE_CHECKING:
    from securechat.ui.app import ChatUI


def build_key_bindings(ui: ChatUI) -> KeyBindings:
    kb = KeyBindings()
    input_empty = Condition(lambda: not ui.input.text)

    @kb.add("enter", filter=~has_completions)
    def _send(event: KeyPressEvent) -> None:
        ui.input.buffer.validate_and_handle()

    @kb.add("enter", filter=has_completions)
    def _take_completion(event: KeyPressEvent) -> None:
        # Enter on an open completion menu takes the choice, like a shell.
        event.current_buffer.complete_state = None

    @kb.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.newline(copy_margin=False)

    @kb.add("pageup")
    def _page_up(event: KeyPressEvent) -> None:
        ui.pane.page_up()

    @kb.add("pagedown")
    def _page_down(event: KeyPressEvent) -> None:
        ui.pane.page_down()

    @kb.add("c-end")
    def _bottom(event: KeyPressEvent) -> None:
        ui.pane.follow()

    @kb.add("c-c")
    def _interrupt(event: KeyPressEvent) -> None:
        ui.quit()

    @kb.add("c-d", filter=input_empty)
    def _eof(event: KeyPressEvent) -> None:
        ui.quit()

    @kb.add("c-l")
    def _redraw(event: KeyPressEvent) -> None:
        event.app.renderer.clear()

    return kb
