"""The help screen: every key binding, read from the widgets' BINDINGS so it cannot drift."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingsMap, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.dom import DOMNode
from textual.screen import ModalScreen
from textual.widgets import Static


@dataclass(frozen=True)
class HelpEntry:
    """Keys that run one action, and what it does."""

    keys: tuple[str, ...]
    description: str


def class_bindings(cls: type[DOMNode], *, below: type[DOMNode] = DOMNode) -> list[Binding]:
    """The bindings ``cls`` ends up with: its own and its bases' (later ones win per key),
    leaving out those of ``below`` and its bases (a modal's ``Screen`` keys, listed once)."""
    merged: dict[str, Binding] = {}
    for base in reversed(cls.__mro__):
        if not (isinstance(base, type) and issubclass(base, DOMNode)):
            continue
        if base in below.__mro__ and base is not DOMNode:
            continue
        if not getattr(base, "_inherit_bindings", True):
            merged.clear()
        declared: list[BindingType] = base.__dict__.get("BINDINGS", [])
        for key, bindings in BindingsMap(declared).key_to_bindings.items():
            merged[key] = bindings[-1]
    return [b for b in merged.values() if not b.system]


def help_entries(app: App[Any], bindings: Iterable[Binding]) -> list[HelpEntry]:
    """Group bindings by action: ``↓, j  Cursor down``."""
    keys: dict[str, list[str]] = {}
    descriptions: dict[str, str] = {}
    for binding in bindings:
        keys.setdefault(binding.action, []).append(app.get_key_display(binding))
        if not descriptions.get(binding.action):
            descriptions[binding.action] = binding.description or binding.action.replace("_", " ")
    return [HelpEntry(tuple(k), descriptions[action]) for action, k in keys.items()]


def section_table(entries: Sequence[HelpEntry]) -> Table:
    """Keys on the left, what they do on the right."""
    table = Table(box=None, show_header=False, pad_edge=False, expand=True)
    table.add_column("keys", style="bold", no_wrap=True, min_width=12)
    table.add_column("action", ratio=1)
    for entry in entries:
        table.add_row(Text(", ".join(entry.keys)), Text(entry.description))
    return table


HelpSections = Sequence[tuple[str, Sequence[Binding]]]


class HelpScreen(ModalScreen[None]):
    """Every binding of the app, section by section; escape, q or ? close it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "Close help"),
    ]

    def __init__(self, sections: HelpSections, notes: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(classes="help")
        self.sections = sections
        self.notes = tuple(notes)  # (title, text): what is no key (the mouse)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog") as dialog:
            dialog.border_title = "Keys"
            dialog.border_subtitle = "esc closes · ctrl+p lists the commands"
            columns: tuple[list[Static], list[Static]] = ([], [])
            heights = [0, 0]
            for title, bindings in self.sections:
                entries = help_entries(self.app, bindings)
                side = 0 if heights[0] <= heights[1] else 1
                heights[side] += len(entries) + 2
                columns[side].append(Static(Content(title), classes="section-title"))
                columns[side].append(Static(section_table(entries)))
            with Horizontal(id="columns"):
                yield Vertical(*columns[0], classes="help-column")
                yield Vertical(*columns[1], classes="help-column")
            for title, text in self.notes:
                yield Static(Content(title), classes="section-title")
                yield Static(Content(text), classes="help-note")

    def text(self) -> str:
        """Every entry as plain text (for tests and screen readers)."""
        lines = []
        for title, bindings in self.sections:
            lines.append(title)
            for entry in help_entries(self.app, bindings):
                lines.append(f"  {', '.join(entry.keys)}  {entry.description}")
        for title, text in self.notes:
            lines += [title, f"  {text}"]
        return "\n".join(lines)
