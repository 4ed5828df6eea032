"""What long commands show while they work: progress bars and the transaction log."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from kvm_clone_tui.api.events import EventCallback, JobEvent
from kvm_clone_tui.cli.documents import failure_document
from kvm_clone_tui.cli.logs import both
from kvm_clone_tui.cli.output import dump

T = TypeVar("T")


class TextProgress:
    """Rich progress bars per file, and the transaction log above them."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description:<14}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, event: JobEvent) -> None:
        if event.step != "copy" and event.message:
            style = {
                "warning": "yellow",
                "failed": "red",
                "rollback": "yellow",
                "done": "green",
            }.get(event.step, "")
            self.progress.console.print(
                f"[{style}]{event.step:>8}[/] {event.message}"
                if style
                else f"{event.step:>8} {event.message}",
                markup=bool(style),
                highlight=False,
                soft_wrap=True,
            )
        for disk in event.disks:
            task = self.tasks.get(disk.target)
            if task is None:
                task = self.progress.add_task(disk.target, total=disk.total)
                self.tasks[disk.target] = task
            self.progress.update(task, completed=disk.done, total=max(disk.total, disk.done))


def run_with_progress(
    work: Callable[[EventCallback | None], Coroutine[Any, Any, T]],
    output: str,
    console: Console,
    job_log: EventCallback | None = None,
) -> T:
    """Run ``work(on_event)`` in asyncio: progress bars on the console when ``output`` is text,
    and every event into the log (``job_log``, from :func:`kvm_clone_tui.cli.logs.job_logger`).
    """
    if output != "text":
        return asyncio.run(work(job_log))
    text = TextProgress(console)
    with text.progress:
        return asyncio.run(work(both(text, job_log)))


def report_failure(command: str, exc: Exception, output: str) -> None:
    """A failed command: a JSON document on stdout for scripts, the message on stderr."""
    if output == "json":
        print(dump(failure_document(exc), "json"))
    print(f"kvm-clone {command}: failed: {exc}", file=sys.stderr)
