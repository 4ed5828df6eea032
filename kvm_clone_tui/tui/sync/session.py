"""Sync sessions: the remembered (VM, clone) pairs, their settings and what each sync run did.

Pure state: :mod:`.sync_flow` asks for pairs, :mod:`.widgets.sync_view` shows the runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from kvm_clone_tui.api.errors import RevertRefused, SyncRefused
from kvm_clone_tui.api.units import format_bytes

if TYPE_CHECKING:
    from kvm_clone_tui.api.results import SyncResult

SYNC_MODES = ("auto", "bitmap", "hash")


@dataclass(frozen=True)
class SyncPair:
    """A VM and its clone: ``vm`` on ``source`` is synced to ``target`` on ``dest``."""

    source: str
    vm: str
    dest: str
    target: str

    @property
    def title(self) -> str:
        """``web01 (alpha) ⇉ beta as web01-copy``."""
        name = "" if self.target == self.vm else f" as {self.target}"
        return f"sync {self.vm} ({self.source}) ⇉ {self.dest}{name}"


@dataclass(frozen=True)
class SyncSettings:
    """How a pair is synced: ``mode`` (auto, bitmap or hash) and whether a sync keeps what it
    overwrites (``checkpoint``: it can then be reverted)."""

    mode: str = "auto"
    checkpoint: bool = False

    def describe(self) -> str:
        """``mode auto · checkpoint on``."""
        return f"mode {self.mode} · checkpoint {'on' if self.checkpoint else 'off'}"


class SyncPairs:
    """The pairs synced in this app session, by source VM, with their settings; the last
    one for ``R``."""

    def __init__(self) -> None:
        self._pairs: dict[tuple[str, str], SyncPair] = {}
        self._settings: dict[SyncPair, SyncSettings] = {}
        self.last: SyncPair | None = None

    def get(self, source: str, vm: str) -> SyncPair | None:
        """The pair remembered for ``vm`` on ``source``."""
        return self._pairs.get((source, vm))

    def settings(self, pair: SyncPair) -> SyncSettings | None:
        """The settings ``pair`` was last synced with."""
        return self._settings.get(pair)

    def remember(self, pair: SyncPair, settings: SyncSettings | None = None) -> None:
        """Keep ``pair`` for its VM (replacing an older one) and make it the last."""
        self._pairs[(pair.source, pair.vm)] = pair
        if settings is not None:
            self._settings[pair] = settings
        self.last = pair


@dataclass(frozen=True)
class SyncRun:
    """One finished sync: when it started, how (mode and why), bytes that differed, bytes
    sent, its duration, the consistency of a running source's copy and whether it can be
    reverted (made with a checkpoint; ``reverted`` once it was)."""

    started: float
    changed_bytes: int
    bytes_sent: int
    seconds: float
    mode: str = "hash"
    mode_reason: str = ""
    consistency: str | None = None
    revertible: bool = False
    job_id: str = ""
    reverted: bool = False

    @classmethod
    def from_result(cls, started: float, result: SyncResult) -> SyncRun:
        """The run a finished ``SyncResult`` describes."""
        return cls(
            started,
            result.changed_bytes,
            result.bytes_sent,
            result.seconds,
            result.mode,
            result.mode_reason,
            result.consistency,
            result.revertible,
            result.job_id,
        )

    def note(self) -> str:
        """``synced: 64.0 KiB changed, 66.1 KiB sent in 1.2 s (bitmap mode)`` (the run's last
        log line), with the consistency of a running source and whether it can be reverted."""
        note = (
            f"synced: {format_bytes(self.changed_bytes)} changed, "
            f"{format_bytes(self.bytes_sent)} sent in {self.seconds:.1f} s ({self.mode} mode)"
        )
        if self.consistency:
            note += f", {self.consistency}"
        if self.revertible:
            note += "; checkpoint kept: u reverts the clone to before this sync"
        return note


def undo_cell(run: SyncRun, last: bool) -> Text:
    """Whether ``run`` can be reverted: only the last sync can, and only with a checkpoint."""
    if run.reverted:
        return Text("reverted", style="yellow")
    if not run.revertible:
        return Text("no", style="dim")
    if last:
        return Text("u reverts", style="bold green")
    return Text("replaced", style="dim")  # a later sync discarded its undo logs


def runs_table(runs: list[SyncRun]) -> Table:
    """Every run of a session: number, time, mode, changed bytes, bytes sent, seconds,
    consistency (running sources), undo, and why that mode."""
    table = Table(box=None, pad_edge=False, header_style="bold", expand=True)
    for name in ("run", "time", "mode", "changed", "sent", "seconds", "copy", "undo"):
        right = name in ("run", "changed", "sent", "seconds")
        table.add_column(name, justify="right" if right else "left", no_wrap=True)
    table.add_column("why this mode", ratio=1, no_wrap=True, overflow="ellipsis")
    for n, run in enumerate(runs, start=1):
        table.add_row(
            str(n),
            time.strftime("%H:%M:%S", time.localtime(run.started)),
            run.mode,
            format_bytes(run.changed_bytes),
            format_bytes(run.bytes_sent),
            f"{run.seconds:.1f}",
            Text(run.consistency or "-", style="" if run.consistency else "dim"),
            undo_cell(run, n == len(runs)),
            Text(run.mode_reason, style="dim"),
        )
    return table


def refusal(exc: BaseException) -> tuple[str, ...] | None:
    """The conflicts of a ``SyncRefused``, else None."""
    return tuple(c.message for c in exc.plan.conflicts) if isinstance(exc, SyncRefused) else None


def revert_refusal(exc: BaseException) -> str | None:
    """The message of a ``RevertRefused``, else None."""
    return str(exc) if isinstance(exc, RevertRefused) else None
