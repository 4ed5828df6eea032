"""The line above the footer: hosts and their states, marked VMs, the filter, the jobs.

While VMs are dragged it shows what releasing them would do instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.content import Content
from textual.widgets import Static

from kvm_clone_tui.tui.hosts.pane import HostPane, PaneState


def status_line(panes: Sequence[HostPane], filter_text: str | None, jobs: str = "") -> Content:
    """One line summing up every pane (and the jobs, when there are any)."""
    if not panes:
        line = Content("no hosts · a adds one")
        return Content(" · ").join([line, f"jobs: {jobs}"]) if jobs else line
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
    if jobs:
        parts.append(f"jobs: {jobs}")
    return Content(" · ").join(parts)


class StatusBar(Static):
    """A one-line summary of every pane, refreshed when a pane reports a change."""

    _line = Content("")
    _hint: Content | None = None

    def show(self, panes: Sequence[HostPane], filter_text: str | None, jobs: str = "") -> None:
        """Redraw from the panes' current state."""
        self._line = status_line(panes, filter_text, jobs)
        self.update(self._hint if self._hint is not None else self._line)

    def hint(self, text: Content | str | None) -> None:
        """Show ``text`` instead of the summary until called with None (a drag's hint)."""
        self._hint = Content(text) if isinstance(text, str) else text
        self.set_class(text is not None, "-hint")
        self.update(self._hint if self._hint is not None else self._line)

    @property
    def hint_text(self) -> str | None:
        """The hint shown, if any."""
        return None if self._hint is None else self._hint.plain
