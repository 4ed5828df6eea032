"""The transaction journal: every step of a job, written before it is taken.

Each job has one JSON file in the client's state directory (``<state>/jobs/<job id>.json``),
replaced atomically at every step. On the destination, staged files carry the job id in their
names (``.kvmclone-partial-<job id>-...``), so they are recognisable there too. After a crash or
``kill -9`` the next run (or ``kvm-clone recover``) reads unfinished journals and rolls back;
``kvm-clone resume`` (or ``clone --idempotent``) instead hands a job's staged files to a new job
that compares them with the source block by block and copies only what is missing or differs.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

#: Journal states: where a job stands.
PLANNED, COPYING, COPIED, COMMITTING, COMMITTED, DONE, ROLLED_BACK, FAILED, ADOPTED = (
    "planned",
    "copying",
    "copied",
    "committing",
    "committed",
    "done",
    "rolled-back",
    "failed",
    "adopted",  # a resuming job took over its staged files (``adopted_by`` names it)
)
FINISHED = frozenset({DONE, ROLLED_BACK, ADOPTED})
STAGING_PREFIX = ".kvmclone-partial-"


def jobs_dir() -> Path:
    """Where journals live: ``$KVM_CLONE_STATE_DIR/jobs`` or the user state dir."""
    base = os.environ.get("KVM_CLONE_STATE_DIR")
    root = Path(base) if base else platformdirs.user_state_path("kvm-clone")
    return root / "jobs"


def new_job_id() -> str:
    """A short, sortable, unique job id."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8]


@dataclass
class StagedFile:
    """A file this job writes: first under ``staging``, renamed to ``final`` at commit."""

    staging: str
    final: str
    committed: bool = False
    source: str = ""  # the source file (empty in journals of older versions)
    size: int = -1  # the source file's size when the job was planned (-1: unknown)
    resume: bool = False  # adopted from an interrupted job: compare blocks, send what differs
    reused: int = 0  # data bytes a resume found already there and verified by block hashes


@dataclass
class JournalRecord:
    """Everything needed to finish or undo a job after a crash."""

    job_id: str
    kind: str
    source_host: str
    dest_host: str
    vm: str
    new_name: str
    new_uuid: str
    pool: str
    pool_path: str
    state: str = PLANNED
    files: list[StagedFile] = field(default_factory=list)
    defined: bool = False
    replaced_xml: str | None = None  # the destination VM that --force replaces
    replaced_files: list[StagedFile] = field(default_factory=list)  # its disks, moved aside
    temporaries: list[str] = field(default_factory=list)  # destination files removed at commit
    source_backup: bool = False  # a live clone's backup job runs on the source VM
    source_checkpoint: str | None = None  # the checkpoint this clone created on the source
    tpm_state: list[StagedFile] = field(default_factory=list)  # swtpm dirs, outside the pool
    live: bool = False  # a live clone: its staged data is of a point in time that is gone
    source_uuid: str = ""  # the source VM's UUID (empty in journals of older versions)
    options: dict[str, Any] = field(default_factory=dict)  # CloneOptions, to plan it again
    adopted_from: str | None = None  # the interrupted job whose staged files this one resumes
    adopted_by: str | None = None  # the job that took over this one's staged files
    log: list[dict[str, Any]] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    owner_pid: int = field(default_factory=os.getpid)  # the process running the job

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> JournalRecord:
        """Read a record written by :meth:`Journal.save`."""
        raw = dict(raw)
        raw["files"] = [StagedFile(**f) for f in raw.get("files", [])]
        raw["replaced_files"] = [StagedFile(**f) for f in raw.get("replaced_files", [])]
        raw["tpm_state"] = [StagedFile(**f) for f in raw.get("tpm_state", [])]
        return cls(**raw)


class Journal:
    """One job's journal file."""

    def __init__(self, record: JournalRecord, directory: Path | None = None) -> None:
        self.record = record
        self.directory = directory or jobs_dir()
        self.path = self.directory / f"{record.job_id}.json"

    def save(self) -> None:
        """Write the record atomically (fsynced) before the step it describes is taken."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump(asdict(self.record), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)

    def step(self, state: str, message: str = "") -> None:
        """Move to ``state`` and log it."""
        self.record.state = state
        self.note(state, message)

    def note(self, step: str, message: str) -> None:
        """Append a log line and save."""
        self.record.log.append({"time": time.time(), "step": step, "message": message})
        self.save()

    @classmethod
    def load(cls, path: Path) -> Journal:
        """Read one journal file."""
        return cls(JournalRecord.from_dict(json.loads(path.read_text())), path.parent)


def _running_elsewhere(record: JournalRecord) -> bool:
    """True when another live process (kvm-clone, by its command line) still runs the job."""
    pid = record.owner_pid
    if pid == os.getpid():
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    alive = stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    return alive and b"kvm" in cmdline and b"clone" in cmdline


def unfinished(directory: Path | None = None, *, include_running: bool = False) -> list[Journal]:
    """Journals of jobs that neither finished nor were rolled back, oldest first.

    Jobs that another live kvm-clone process is still running are left out (they are not
    interrupted, just busy) unless ``include_running``.
    """
    folder = directory or jobs_dir()
    journals = []
    for path in sorted(folder.glob("*.json")):
        try:
            journal = Journal.load(path)
        except (OSError, ValueError, TypeError, KeyError):
            continue
        if journal.record.state in FINISHED:
            continue
        if include_running or not _running_elsewhere(journal.record):
            journals.append(journal)
    return journals
