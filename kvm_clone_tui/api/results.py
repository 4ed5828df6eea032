"""What finished jobs did: clones, syncs and reverts (and each file's copy)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TransferResult:
    """What arrived, and how."""

    label: str
    route: str
    bytes_written: int
    digest: str
    verified: bool
    seconds: float
    zero_bytes: int = 0  # ranges made to read as zeros (holes punched, or left as holes)


@dataclass(frozen=True)
class CloneResult:
    """What a finished clone did."""

    job_id: str
    source_host: str
    dest_host: str
    vm: str
    new_name: str
    uuid: str
    route: str
    files: tuple[TransferResult, ...]
    bytes_copied: int
    seconds: float
    started: bool
    already_done: bool = False
    warnings: tuple[str, ...] = ()
    consistency: str | None = None  # live clones: application- or crash-consistent
    resumed_from: str | None = None  # the interrupted job whose staged files this one finished
    bytes_reused: int = 0  # data bytes a resume found staged and verified, not sent again
    success: bool = True  # False: ``error`` says why (``clone_vm`` without ``check=True``)
    error: str | None = None

    @property
    def new_vm_name(self) -> str:
        """The clone's name on the destination (the original kvm-clone's name for it)."""
        return self.new_name

    @classmethod
    def failure(
        cls, source: str, dest: str, vm: str, new_name: str, error: str, job_id: str = ""
    ) -> CloneResult:
        """A clone that did not happen (refused, or rolled back), and why."""
        return cls(
            job_id=job_id,
            source_host=source,
            dest_host=dest,
            vm=vm,
            new_name=new_name,
            uuid="",
            route="",
            files=(),
            bytes_copied=0,
            seconds=0.0,
            started=False,
            success=False,
            error=error,
        )


@dataclass(frozen=True)
class FileSync:
    """What one file's sync found and moved."""

    label: str
    blocks: int
    changed_blocks: int
    changed_bytes: int
    bytes_sent: int
    size: int


@dataclass(frozen=True)
class SyncResult:
    """What a finished sync did."""

    job_id: str
    source_host: str
    dest_host: str
    vm: str
    target: str
    mode: str
    files: tuple[FileSync, ...]
    changed_bytes: int
    bytes_sent: int
    seconds: float
    mode_reason: str = ""
    checkpoint: str | None = None  # the source checkpoint the next sync starts from
    revertible: bool = False  # --checkpoint: `kvm-clone revert` puts the clone back
    consistency: str | None = None  # running sources: application- or crash-consistent
    success: bool = True  # False: ``error`` says why (``sync_vm`` without ``check=True``)
    error: str | None = None

    @property
    def new_vm_name(self) -> str:
        """The clone that was brought up to date (the original kvm-clone's name for it)."""
        return self.target

    @classmethod
    def failure(cls, source: str, dest: str, vm: str, target: str, error: str) -> SyncResult:
        """A sync that did not happen (refused, or put back), and why."""
        return cls(
            job_id="",
            source_host=source,
            dest_host=dest,
            vm=vm,
            target=target,
            mode="",
            files=(),
            changed_bytes=0,
            bytes_sent=0,
            seconds=0.0,
            success=False,
            error=error,
        )


@dataclass(frozen=True)
class RevertResult:
    """What ``revert`` put back."""

    dest_host: str
    target: str
    sync_job: str  # the sync that was undone
    restored_bytes: int
    seconds: float


@dataclass(frozen=True)
class UnfinishedJob:
    """A clone that neither finished nor was rolled back (what ``resume --list`` shows)."""

    job_id: str
    state: str  # the journal's state: planned, copying, copied, committing, failed...
    vm: str
    source_host: str
    dest_host: str
    new_name: str
    created: float  # when it started (seconds since the epoch)
    owner_pid: int  # the process that ran it
    running: bool  # another live kvm-clone process still runs it: it is not touched
    blocker: str | None  # why it would start afresh instead of resuming (None: it resumes)
