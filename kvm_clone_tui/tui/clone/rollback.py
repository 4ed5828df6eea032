"""After a failed clone: what happened, what it left on the destination, and what to do."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

Choice = Literal["rollback", "keep", "log"]


def failure_text(title: str, error: str, dest: str, staged: Sequence[str]) -> Text:
    """The error, then every staged file."""
    text = Text()
    text.append(f"{title}\n\n", style="bold")
    text.append("What happened\n", style="bold")
    text.append(f"{error}\n\n", style="red")
    if staged:
        text.append(f"Left on {dest} (staged, not defined as a VM)\n", style="bold")
        for path in staged:
            text.append(f"  {path}\n")
    else:
        text.append(f"Nothing was staged on {dest}.\n", style="dim")
    text.append(
        "\nRoll back now removes them. Keep them to resume the clone: r on the job resumes it "
        "(only missing or differing blocks move), x on it asks again; later, "
        "`kvm-clone resume` finishes it and `kvm-clone recover` rolls it back."
    )
    return text


class RollbackScreen(ModalScreen[Choice]):
    """Dismisses with ``rollback``, ``keep`` (for resume; also escape) or ``log``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "choose('rollback')", "Roll back now"),
        Binding("k,escape", "choose('keep')", "Keep for resume"),
        Binding("l", "choose('log')", "Show the log"),
    ]

    def __init__(self, title: str, error: str, dest: str, staged: Sequence[str]) -> None:
        super().__init__(classes="rollback")
        self.text = failure_text(title, error, dest, staged)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog") as dialog:
            dialog.border_title = "Clone failed"
            yield Static(self.text, id="failure")
            with Horizontal(classes="buttons"):
                yield Button("Roll back now (r)", variant="error", id="rollback")
                yield Button("Keep for resume (k)", id="keep")
                yield Button("Show log (l)", id="log")

    def on_mount(self) -> None:
        self.query_one("#rollback", Button).focus()

    def action_choose(self, choice: Choice) -> None:
        """Close with the operator's choice."""
        self.dismiss(choice)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        choice: Choice = "rollback"
        if event.button.id == "keep":
            choice = "keep"
        elif event.button.id == "log":
            choice = "log"
        self.dismiss(choice)
