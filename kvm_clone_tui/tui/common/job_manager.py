"""The app's long-running jobs (clones, resumes, rollbacks, syncs, reverts), one worker each.

Textual cancels a widget's workers when the widget is removed; a clone cancelled that way
would roll back what it copied because its view went away. So a job's work runs in a worker
of the app, started here, and the job widget only shows it and asks to cancel it.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from textual.app import App
from textual.dom import DOMNode
from textual.worker import Worker

GROUP = "jobs"


class JobManager:
    """Starts and cancels the jobs of one app; each owner (a job widget) runs one at a time."""

    def __init__(self, app: App[Any]) -> None:
        self.app = app
        self._workers: dict[DOMNode, Worker[None]] = {}

    @classmethod
    def of(cls, app: App[Any]) -> JobManager:
        """The manager of ``app`` (made on first use for an app that has none)."""
        manager = getattr(app, "job_manager", None)
        if not isinstance(manager, JobManager):
            manager = cls(app)
            setattr(app, "job_manager", manager)  # noqa: B010 (any app, not only ours)
        return manager

    def run(self, owner: DOMNode, work: Coroutine[Any, Any, None], *, name: str) -> Worker[None]:
        """Run ``work`` for ``owner`` in a worker of the app."""
        worker: Worker[None] = self.app.run_worker(
            work, name=name, group=GROUP, exit_on_error=False
        )
        self._workers[owner] = worker
        return worker

    def worker(self, owner: DOMNode) -> Worker[None] | None:
        """The worker of ``owner``'s latest job (finished or not; None: it never ran one)."""
        return self._workers.get(owner)

    def cancel(self, owner: DOMNode) -> bool:
        """Cancel ``owner``'s latest job; False when it never ran one."""
        if owner not in self._workers:
            return False
        self._workers[owner].cancel()  # a finished worker ignores it
        return True
