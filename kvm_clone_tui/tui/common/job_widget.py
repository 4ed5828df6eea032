"""The widgets a job in the jobs panel is drawn with: a progress line per file (:class:`FileRow`),
how often it is repainted and how much log it keeps."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.content import Content
from textual.widgets import Label, ProgressBar, Sparkline, Static

from kvm_clone_tui.tui.common.progress import FileState

REPAINT_SECONDS = 0.25
LOG_LINES = 2000


class FileRow(Horizontal):
    """``vda  ███████░░░░ 45%  12.0 MiB / 45.0 MiB · 2.0 MiB/s · ETA 0:17  ▂▃▅▇``."""

    def __init__(self, state: FileState) -> None:
        super().__init__(classes="file-row")
        self.state = state

    def compose(self) -> ComposeResult:
        yield Label(Content(self.state.label), classes="file-label")
        yield ProgressBar(total=max(1, self.state.total), show_eta=False)
        yield Static(classes="file-stats")
        yield Sparkline([], classes="file-rate")

    def repaint(self) -> None:
        """Show the file's latest state."""
        state = self.state
        self.query_one(ProgressBar).update(total=max(1, state.total), progress=state.done)
        self.query_one(".file-stats", Static).update(Content(state.stats()))
        self.query_one(Sparkline).data = list(state.rates)
