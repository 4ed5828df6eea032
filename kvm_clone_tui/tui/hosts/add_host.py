"""Ask for a host to open: a spec validated as it is typed, errors shown inline."""

from __future__ import annotations

from collections.abc import Collection
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from kvm_clone_tui.api.validation import ValidationError, parse_host_spec

HINT = "an ssh alias, a host from kvm-clone's config, or [user@]host[:port]"


def host_problem(spec: str, open_hosts: Collection[str]) -> str | None:
    """Why ``spec`` cannot be added (None: it can)."""
    if not spec:
        return "type a host"
    try:
        parse_host_spec(spec)
    except ValidationError as exc:
        return str(exc)
    if spec in open_hosts:
        return f"{spec} is already open"
    return None


class AddHostScreen(ModalScreen[str | None]):
    """Dismisses with the host spec, or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel"),
    ]

    def __init__(self, open_hosts: Collection[str]) -> None:
        super().__init__(classes="add-host")
        self.open_hosts = open_hosts

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as dialog:
            dialog.border_title = "Add a host"
            yield Static(Content(HINT), classes="hint")
            yield Input(placeholder="root@10.0.0.5:22", id="spec")
            yield Label(classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Add", variant="primary", id="add")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self._show_problem(None)

    def _show_problem(self, problem: str | None) -> None:
        label = self.query_one(".error", Label)
        label.update(Content(problem or ""))
        label.display = problem is not None
        self.query_one("#spec", Input).set_class(problem is not None, "-invalid")

    def _submit(self) -> None:
        spec = self.query_one("#spec", Input).value.strip()
        problem = host_problem(spec, self.open_hosts)
        self._show_problem(problem)
        if problem is None:
            self.dismiss(spec)

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        spec = event.value.strip()
        self._show_problem(host_problem(spec, self.open_hosts) if spec else None)

    @on(Input.Submitted)
    def _entered(self) -> None:
        self._submit()

    @on(Button.Pressed, "#add")
    def _add(self) -> None:
        self._submit()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)
