"""Sync sessions: the remembered (VM, clone) pairs and what each sync run did.

Pure state: :mod:`.sync_flow` asks for pairs, :mod:`.widgets.sync_view` shows the runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.table import Table

from kvm_clone_tui.engine.errors import KVMCloneError
from kvm_clone_tui.engine.units import format_bytes


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


class SyncPairs:
    """The pairs synced in this app session, by source VM; the last one for ``R``."""

    def __init__(self) -> None:
        self._pairs: dict[tuple[str, str], SyncPair] = {}
        self.last: SyncPair | None = None

    def get(self, source: str, vm: str) -> SyncPair | None:
        """The pair remembered for ``vm`` on ``source``."""
        return self._pairs.get((source, vm))

    def remember(self, pair: SyncPair) -> None:
        """Keep ``pair`` for its VM (replacing an older one) and make it the last."""
        self._pairs[(pair.source, pair.vm)] = pair
        self.last = pair


@dataclass(frozen=True)
class SyncRun:
    """One finished sync: when it started, bytes that differed, bytes sent, its duration."""

    started: float
    changed_bytes: int
    bytes_sent: int
    seconds: float

    def note(self) -> str:
        """``synced: 64.0 KiB changed, 66.1 KiB sent in 1.2 s`` (the job's last log line)."""
        return (
            f"synced: {format_bytes(self.changed_bytes)} changed, "
            f"{format_bytes(self.bytes_sent)} sent in {self.seconds:.1f} s"
        )


def runs_table(runs: list[SyncRun]) -> Table:
    """Every run of a session: number, time, changed bytes, bytes sent, seconds."""
    table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    for name in ("run", "time", "changed", "sent", "seconds"):
        table.add_column(name, justify="left" if name == "time" else "right")
    for n, run in enumerate(runs, start=1):
        table.add_row(
            str(n),
            time.strftime("%H:%M:%S", time.localtime(run.started)),
            format_bytes(run.changed_bytes),
            format_bytes(run.bytes_sent),
            f"{run.seconds:.1f}",
        )
    return table


def refusal(exc: BaseException) -> tuple[str, ...] | None:
    """The conflicts of a ``SyncRefused`` (read by shape: the sync module imports libvirt)."""
    if not isinstance(exc, KVMCloneError):
        return None
    conflicts = getattr(getattr(exc, "plan", None), "conflicts", None)
    return tuple(conflicts) if isinstance(conflicts, tuple) else None
