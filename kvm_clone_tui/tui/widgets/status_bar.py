"""The line above the footer: hosts and their states, marked VMs, the active filter."""

from __future__ import annotations

from collections.abc import Sequence

from textual.content import Content
from textual.widgets import Static

from kvm_clone_tui.tui.widgets.host_pane import HostPane, PaneState


def status_line(panes: Sequence[HostPane], filter_text: str | None) -> Content:
    """One line summing up every pane."""
    if not panes:
        return Content("no hosts · a adds one")
    counts = {state: sum(p.state is state for p in panes) for state in PaneState}
    parts: list[Content | str] = [f"{len(panes)} host{'s' if len(panes) != 1 else ''}"]
    if counts[PaneState.CONNECTED]:
        parts.append(f"{counts[PaneState.CONNECTED]} connected")
    if counts[PaneState.CONNECTING]:
        parts.append(f"{counts[PaneState.CONNECTING]} connecting")
    if counts[PaneState.FAILED]:
        parts.append(Content.styled(f"{counts[PaneState.FAILED]} failed", "$error bold"))
    marked = [f"{p.host}:{vm.name}" for p in panes for vm in p.marked_vms()]
    if marked:
        shown = ", ".join(marked[:3]) + (f" +{len(marked) - 3}" if len(marked) > 3 else "")
        parts.append(f"{len(marked)} marked ({shown})")
    if filter_text:
        parts.append(f"filter /{filter_text}/")
    return Content(" · ").join(parts)


class StatusBar(Static):
    """A one-line summary of every pane, refreshed when a pane reports a change."""

    def show(self, panes: Sequence[HostPane], filter_text: str | None) -> None:
        """Redraw from the panes' current state."""
        self.update(status_line(panes, filter_text))
