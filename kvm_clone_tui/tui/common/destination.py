"""Where to clone to: the other open hosts, then the source host itself (copies)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option, OptionDoesNotExist

from kvm_clone_tui.api.models import VM


class DestinationScreen(ModalScreen[str | None]):
    """Dismisses with the chosen host, or None when cancelled.

    ``hosts`` are the open panes' hosts with a note on their state ("" when connected);
    ``verb`` heads the title (a sync says "Sync"), ``preferred`` is highlighted first.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("j", "cursor('down')", "Next host", show=False),
        Binding("k", "cursor('up')", "Previous host", show=False),
    ]

    def __init__(
        self,
        source: str,
        vms: Sequence[VM],
        hosts: Sequence[tuple[str, str]],
        *,
        verb: str = "Clone",
        preferred: str | None = None,
    ) -> None:
        super().__init__(classes="destination")
        self.source = source
        self.vms = tuple(vms)
        self.hosts = tuple(hosts)
        self.verb = verb
        self.preferred = preferred

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as dialog:
            dialog.border_title = Content(
                f"{self.verb} {vm_names(self.vms)} from {self.source} to…"
            )
            dialog.border_subtitle = "enter picks · esc cancels"
            options = [
                Option(Content.assemble((h, "bold"), f"  {note}" if note else ""), id=h)
                for h, note in self.hosts
                if h != self.source
            ]
            options.append(
                Option(
                    Content.assemble((self.source, "bold"), "  this host: copies under new names"),
                    id=self.source,
                )
            )
            yield OptionList(*options, id="hosts-list")
            yield Static(
                Content("or drag the VM onto another host's pane with the mouse"), classes="hint"
            )

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.highlighted = 0
        if self.preferred is not None:
            with suppress(OptionDoesNotExist):  # the host's pane was closed
                options.highlighted = options.get_option_index(self.preferred)
        options.focus()

    def action_cursor(self, direction: str) -> None:
        """Move the highlight (j/k, as in the host panes)."""
        options = self.query_one(OptionList)
        if direction == "down":
            options.action_cursor_down()
        else:
            options.action_cursor_up()

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


def vm_names(vms: Sequence[VM]) -> str:
    """``web01``, ``web01, db01``, ``web01, db01 +2``."""
    names = [vm.name for vm in vms]
    return ", ".join(names[:2]) + (f" +{len(names) - 2}" if len(names) > 2 else "")
