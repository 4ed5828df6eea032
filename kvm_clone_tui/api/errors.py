"""Errors the engine raises: each names the host it concerns (or the job) and says what to do.

The UIs catch these by class; none of them carries an engine object (a refusal carries its
plan, a kept failure the paths it left on the destination).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kvm_clone_tui.api.plans import ClonePlan, SyncPlan


class KVMCloneError(Exception):
    """Base of every error kvm-clone reports to the operator."""


class HostError(KVMCloneError):
    """Something failed on or on the way to one host."""

    #: Short machine-readable kind, used in ``--output json``.
    kind = "host-error"

    def __init__(self, host: str, message: str) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host
        self.message = message


class HostUnreachableError(HostError):
    """The host did not answer (refused, unreachable, timed out), even after retries."""

    kind = "unreachable"


class AuthenticationError(HostError):
    """The host refused our credentials."""

    kind = "authentication"


class HostKeyError(HostError):
    """The host's key is unknown or has changed: never connected past this."""

    kind = "host-key"


class LibvirtError(HostError):
    """libvirt on the host failed or is not running."""

    kind = "libvirt"


class RemoteCommandError(HostError):
    """A command run on the host over SSH failed."""

    kind = "remote-command"


class CloneRefused(KVMCloneError):
    """The plan has conflicts; nothing was copied."""

    def __init__(self, plan: ClonePlan) -> None:
        super().__init__("clone refused: " + "; ".join(c.message for c in plan.conflicts))
        self.plan = plan


class CloneFailed(KVMCloneError):
    """A clone failed and, as asked, was not rolled back yet (see ``run_clone``).

    ``staged`` lists the files the job left on the destination (its final name for a file
    already committed, else its staging name); ``kvm-clone resume`` or ``rollback_job`` with
    ``job_id`` finishes or removes them.
    """

    def __init__(self, job_id: str, staged: Sequence[str], cause: Exception) -> None:
        super().__init__(f"clone failed: {cause} (job {job_id}; staged files kept)")
        self.job_id = job_id
        self.staged: tuple[str, ...] = tuple(staged)
        self.cause = cause


class SyncRefused(KVMCloneError):
    """The sync plan has conflicts; nothing was changed."""

    def __init__(self, plan: SyncPlan) -> None:
        super().__init__("sync refused: " + "; ".join(c.message for c in plan.conflicts))
        self.plan = plan


class RevertRefused(KVMCloneError):
    """The clone cannot be put back to before its last sync; nothing was changed."""


class ResumeError(KVMCloneError):
    """A job cannot be resumed at all (unknown, still running, or from an older version)."""
