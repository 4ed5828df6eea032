"""Messages between the UI's parts (engine events arrive as :class:`InventoryChanged`).

Messages that belong to one widget (a job's progress, a drag over the VM table) are defined on
that widget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.message import Message

from kvm_clone_tui.api.models import InventoryEvent

if TYPE_CHECKING:
    from kvm_clone_tui.tui.hosts.pane import HostPane


class InventoryChanged(Message):
    """A VM of a host appeared, changed or disappeared (posted to that host's pane)."""

    bubble = False

    def __init__(self, event: InventoryEvent) -> None:
        super().__init__()
        self.event = event


class PaneStatusChanged(Message):
    """A host pane connected, failed, reloaded or changed its marks (bubbles to the app)."""

    def __init__(self, host: str) -> None:
        super().__init__()
        self.host = host


class VMDetailsRequested(Message):
    """Enter or a click on a selected row: show that VM's details (bubbles to the app)."""

    def __init__(self, host: str, vm_name: str) -> None:
        super().__init__()
        self.host = host
        self.vm_name = vm_name


class RemoveHostRequested(Message):
    """``d`` in a pane: the app asks for confirmation, then removes it."""

    def __init__(self, pane: HostPane) -> None:
        super().__init__()
        self.pane = pane


class CloneRequested(Message):
    """``c`` in a pane: clone its marked VMs (or the one under the cursor) somewhere."""

    def __init__(self, pane: HostPane) -> None:
        super().__init__()
        self.pane = pane


class SyncRequested(Message):
    """``s`` in a pane: sync the VM under the cursor to its clone (bubbles to the app)."""

    def __init__(self, pane: HostPane) -> None:
        super().__init__()
        self.pane = pane
