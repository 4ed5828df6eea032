"""Which clone to sync: its name on the destination (the VM's own name, or the remembered one)."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from kvm_clone_tui.engine.validation import ValidationError, validate_vm_name

HINT = (
    "Only the blocks that differ are sent. The clone must be shut off and have been cloned "
    "from this VM."
)


class SyncDialog(ModalScreen[str | None]):
    """Dismisses with the clone's name, or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel"),
    ]

    def __init__(self, source: str, vm: str, dest: str, target: str) -> None:
        super().__init__(classes="sync-dialog")
        self.source = source
        self.vm = vm
        self.dest = dest
        self.target = target

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as dialog:
            dialog.border_title = Content(f"Sync {self.vm} ({self.source}) to {self.dest}")
            dialog.border_subtitle = "enter syncs · esc cancels"
            yield Static(Content(HINT), classes="hint")
            yield Label(Content(f"The clone's name on {self.dest}"))
            yield Input(self.target, id="target")
            yield Label(classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Sync", variant="primary", id="sync")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def _problem(self, name: str) -> str | None:
        try:
            validate_vm_name(name)
        except ValidationError as exc:
            return str(exc)
        if name == self.vm and self.dest == self.source:
            return "on the same host the clone has another name"
        return None

    def _submit(self) -> None:
        name = self.query_one(Input).value.strip()
        problem = self._problem(name)
        self.query_one(".error", Label).update(Content(problem or ""))
        if problem is None:
            self.dismiss(name)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self._submit()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "sync":
            self._submit()
        else:
            self.dismiss(None)
