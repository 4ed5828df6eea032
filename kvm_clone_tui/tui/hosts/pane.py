"""One host's pane: its connection state in the border title, a notice line and its VM table."""

from __future__ import annotations

import re
from enum import Enum
from typing import ClassVar

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import DataTable, Static

from kvm_clone_tui.api.errors import HostError
from kvm_clone_tui.api.models import VM, HostInventory, InventoryEvent
from kvm_clone_tui.tui.hosts.feeds import HostFeeds
from kvm_clone_tui.tui.hosts.messages import (
    CloneRequested,
    InventoryChanged,
    PaneStatusChanged,
    RemoveHostRequested,
    SyncRequested,
    VMDetailsRequested,
)
from kvm_clone_tui.tui.hosts.vm_table import VMTable


class PaneState(str, Enum):
    """Where a pane's host connection is."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILED = "failed"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def failure_reason(exc: BaseException) -> str:
    """What went wrong, without repeating the host's name that the pane already shows."""
    if isinstance(exc, HostError):
        return exc.message
    return str(exc) or type(exc).__name__


class HostPane(Vertical):
    """The VMs of one host, loaded in a worker and kept current by the host's events."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "clone", "Clone"),
        Binding("s", "sync", "Sync"),
        Binding("r", "reload", "Refresh"),
        Binding("d", "remove", "Remove host"),
    ]

    def __init__(
        self,
        host: str,
        feeds: HostFeeds,
        *,
        pattern: re.Pattern[str] | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id, classes="host-pane")
        self.host = host
        self.feeds = feeds
        self._pattern = pattern
        self.state = PaneState.CONNECTING
        self.inventory: HostInventory | None = None
        self.error: str | None = None
        self.title_text = ""

    def compose(self) -> ComposeResult:
        yield VMTable(pattern=self._pattern)
        yield Static(classes="notice")

    @property
    def table(self) -> VMTable:
        """The pane's VM table."""
        return self.query_one(VMTable)

    def on_mount(self) -> None:
        self.connect()

    def on_click(self, event: events.Click) -> None:
        """A click anywhere in the pane (border, notice) makes it the current pane."""
        self.table.focus()

    # -- loading ---------------------------------------------------------------------------------

    @work(exclusive=True, group="load", exit_on_error=False)
    async def connect(self) -> None:
        """Connect (or reconnect) to the host, show its VMs and follow its events."""
        self._set_state(PaneState.CONNECTING)
        try:
            inventory = await self.feeds.open(self.host, self._on_event)
        except Exception as exc:  # every failure belongs to this host; show it, never crash
            self._failed(exc)
            return
        self._loaded(inventory)

    @work(exclusive=True, group="load", exit_on_error=False)
    async def reload(self) -> None:
        """Read the whole host again (the table keeps its cursor and marks)."""
        self.notice("reading the host again…")
        try:
            inventory = await self.feeds.refresh(self.host)
        except Exception as exc:  # a failed re-read is shown like a failed connection
            self._failed(exc)
            return
        self._loaded(inventory)

    def action_reload(self) -> None:
        """``r``: retry a failed host, re-read a connected one."""
        if self.state is PaneState.FAILED:
            self.connect()
        elif self.state is PaneState.CONNECTED:
            self.reload()

    def action_remove(self) -> None:
        """``d``: ask the app to remove this pane (it asks for confirmation first)."""
        self.post_message(RemoveHostRequested(self))

    def action_clone(self) -> None:
        """``c``: clone the marked VMs (else the one under the cursor) to a host to pick."""
        self.post_message(CloneRequested(self))

    def action_sync(self) -> None:
        """``s``: sync the VM under the cursor to its clone on a host to pick."""
        self.post_message(SyncRequested(self))

    def clone_selection(self) -> list[VM]:
        """What ``c`` or a drag works on: the marked VMs, else the one under the cursor."""
        marked = self.marked_vms()
        current = self.table.current_vm() if self.state is PaneState.CONNECTED else None
        return marked or ([current] if current is not None else [])

    def _on_event(self, event: InventoryEvent) -> None:
        # Called by the tracker on the event loop: hand it over as a message, in order.
        self.post_message(InventoryChanged(event))

    def on_inventory_changed(self, message: InventoryChanged) -> None:
        message.stop()
        if self.state is not PaneState.CONNECTED:
            return  # a full (re)load is under way and will show the latest state
        self.inventory = message.event.inventory
        self.table.apply(message.event.name, message.event.vm)
        self._show_status()

    def _loaded(self, inventory: HostInventory) -> None:
        self.inventory = inventory
        self.error = None
        self.table.show(inventory.vms)
        self._set_state(PaneState.CONNECTED)

    def _failed(self, exc: BaseException) -> None:
        self.error = failure_reason(exc)
        self._set_state(PaneState.FAILED)

    # -- what the pane shows ---------------------------------------------------------------------

    def set_filter(self, pattern: re.Pattern[str] | None) -> None:
        """Show only the VMs that ``pattern`` finds (None: all)."""
        self.table.set_filter(pattern)
        self._show_status()

    def marked_vms(self) -> list[VM]:
        """The VMs marked in this pane (the selection that later actions work on)."""
        return self.table.marked_vms()

    def notice(self, text: str | None) -> None:
        """Show a line above the table (None hides it)."""
        notice = self.query_one(".notice", Static)
        notice.update(Content(text or ""))
        notice.display = bool(text)

    def _set_state(self, state: PaneState) -> None:
        self.state = state
        for each in PaneState:
            self.set_class(each is state, f"-{each.value}")
        self._show_status()

    def _show_status(self) -> None:
        """Border title (connection), subtitle (filter and marks) and notice line."""
        host = (self.host, "bold")
        inv = self.inventory
        if self.state is PaneState.CONNECTING:
            title = Content.assemble(host, " · connecting…")
            notice: str | None = f"connecting to {self.host}…"
        elif self.state is PaneState.FAILED:
            title = Content.assemble(host, " · ", ("error", "bold"), f": {self.error} · r retry")
            notice = f"{self.error}\n\npress r to retry, d to remove this host"
        else:
            assert inv is not None
            hostname = "" if inv.hostname == self.host else f" ({inv.hostname})"
            title = Content.assemble(
                host,
                f"{hostname} · libvirt {inv.libvirt_version} · {_plural(len(inv.vms), 'VM')}",
            )
            notice = self._connected_notice(inv)
        self.title_text = title.plain
        self.border_title = title
        self.border_subtitle = self._subtitle()
        self.notice(notice)
        self.post_message(PaneStatusChanged(self.host))

    def _connected_notice(self, inv: HostInventory) -> str | None:
        lines = [f"warning: {e}" for e in inv.errors]
        if not inv.vms:
            lines.append("no VMs on this host")
        elif not self.table.row_count:
            lines.append("no VM matches the filter (esc clears it)")
        return "\n".join(lines) or None

    def _subtitle(self) -> str:
        table = self.table
        parts = []
        if table.pattern is not None and self.inventory is not None:
            parts.append(f"{table.visible_count}/{len(self.inventory.vms)} shown")
        if table.marked:
            parts.append(f"{len(table.marked)} marked")
        if table.hidden_columns and self.state is PaneState.CONNECTED:
            parts.append(f"{_plural(table.hidden_columns, 'column')} hidden")
        return " · ".join(parts)

    @on(VMTable.MarksChanged)
    @on(VMTable.ColumnsChanged)
    def _table_changed(self) -> None:
        self.border_subtitle = self._subtitle()

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(VMDetailsRequested(self.host, event.row_key.value))


def pane_note(pane: HostPane) -> str:
    """A pane's state in a few words for the destination list ("" when connected)."""
    if pane.state is PaneState.CONNECTING:
        return "connecting…"
    if pane.state is PaneState.FAILED:
        return f"error: {pane.error}"
    return ""
