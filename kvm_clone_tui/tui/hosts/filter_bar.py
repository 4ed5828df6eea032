"""The filter line: a regular expression matched against VM names and states, live."""

from __future__ import annotations

import re
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.content import Content
from textual.message import Message
from textual.widgets import Input, Label


def compile_filter(text: str) -> re.Pattern[str] | None:
    """The pattern for ``text`` (case-insensitive; empty: None). Raises ``re.error``."""
    return re.compile(text, re.IGNORECASE) if text else None


class FilterBar(Horizontal):
    """Hidden until ``/``; each keystroke re-filters, a bad regex shows its error inline."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "clear", "Clear filter"),
    ]

    class Changed(Message):
        """A new valid filter (``pattern`` None: no filter)."""

        def __init__(self, pattern: re.Pattern[str] | None, text: str) -> None:
            super().__init__()
            self.pattern = pattern
            self.text = text

    class Done(Message):
        """Enter or escape: give the focus back to the panes."""

    def compose(self) -> ComposeResult:
        yield Label("filter /", classes="prompt")
        yield Input(
            placeholder="regex matched in VM names and states", id="filter-input", disabled=True
        )
        yield Label(classes="error")

    @property
    def input(self) -> Input:
        """The text field."""
        return self.query_one(Input)

    def open(self) -> None:
        """Show the bar and put the cursor in it."""
        self.display = True
        self.input.disabled = False
        self.input.focus()

    def action_clear(self) -> None:
        """Clear the filter, hide the bar and hand the focus back."""
        self.input.value = ""  # posts Input.Changed, which clears the filter
        self._error(None)
        self._hide()
        self.post_message(self.Done())

    def _hide(self) -> None:
        self.display = False
        self.input.disabled = True  # out of the focus chain while hidden

    def _error(self, text: str | None) -> None:
        label = self.query_one(".error", Label)
        label.update(Content(text or ""))
        label.display = bool(text)
        self.set_class(bool(text), "-invalid")

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        try:
            pattern = compile_filter(event.value)
        except re.error as exc:
            self._error(f"bad regex: {exc}")
            return
        self._error(None)
        self.post_message(self.Changed(pattern, event.value))

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.has_class("-invalid"):
            self.app.bell()  # fix the regex or press escape
            return
        if not event.value:
            self._hide()
        self.post_message(self.Done())
