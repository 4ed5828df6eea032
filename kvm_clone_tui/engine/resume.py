"""Resuming an interrupted clone from the files it staged, instead of copying everything again.

A clone interrupted before its commit (``kill -9``, a crash, a dropped link, Ctrl-C with
``--idempotent``, or "keep for later" in the TUI) leaves its staged files in the destination
pool, listed by its journal. Resuming (``clone --idempotent``, ``kvm-clone resume``,
``KVMCloneClient.resume_job``) plans the same clone again as a **new job** that **adopts** those
files: its journal is written first, then each staged file is renamed to the new job's staging
name and the old journal is marked ``adopted``. Each adopted file is compared with its source
block by block (``engine/block_compare.py``) and only what differs or is missing is sent, in
place; then the usual commit. A job that cannot resume (a live clone: its point in time is gone;
a job that had begun its commit; a source that changed) is rolled back and cloned afresh, and
the events say why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

from kvm_clone_tui.api.errors import ResumeError
from kvm_clone_tui.api.options import CloneOptions
from kvm_clone_tui.api.units import format_bytes
from kvm_clone_tui.engine.journal import (
    ADOPTED,
    COMMITTED,
    COMMITTING,
    DONE,
    Journal,
    JournalRecord,
    StagedFile,
    unfinished,
)
from kvm_clone_tui.engine.progress import JobEvent
from kvm_clone_tui.engine.remote_agent import RemoteAgent

if TYPE_CHECKING:
    from kvm_clone_tui.api.plans import ClonePlan
    from kvm_clone_tui.api.results import CloneResult
    from kvm_clone_tui.engine.host_port import Host, Hosts

EventCallback = Callable[[JobEvent], None]


def options_record(options: CloneOptions) -> dict[str, Any]:
    """CloneOptions as the journal keeps them (JSON types only)."""
    return asdict(options)


def options_from_record(record: JournalRecord) -> CloneOptions:
    """The options a journalled job ran with, to plan it again (names and pool pinned)."""
    if not record.options:
        raise ResumeError(
            f"job {record.job_id} was journalled by an older kvm-clone that did not record its "
            f"options: run the same `kvm-clone clone ... --idempotent` again to resume it, or "
            "`kvm-clone recover` to roll it back"
        )
    known = {f.name for f in fields(CloneOptions)}
    values = {k: v for k, v in record.options.items() if k in known}
    values.update(new_name=record.new_name, pool=record.pool, idempotent=True)
    return CloneOptions(**values)


def resume_blocker(record: JournalRecord) -> str | None:
    """Why this journalled job cannot resume whatever the new plan is (None: it can)."""
    if record.kind != "clone":
        return f"it is a {record.kind} job, not a clone"
    if record.live or record.source_backup or record.temporaries:
        return (
            "it was a live clone: its staged data is of a point in time that no longer "
            "exists, so it starts again from a new one"
        )
    if record.state in (COMMITTING, COMMITTED, DONE) or record.defined:
        return f"it had begun its commit ({record.state})"
    if record.replaced_files or record.replaced_xml or any(f.committed for f in record.files):
        return "it had begun its commit (files renamed or a replaced VM set aside)"
    if not record.files:
        return "it staged no files"
    return None


def plan_mismatch(record: JournalRecord, plan: ClonePlan) -> str | None:
    """Why the new plan does not continue the journalled job (None: it does)."""
    if (record.source_host, record.vm) != (plan.source_host, plan.vm.name):
        return f"it cloned {record.vm} from {record.source_host}"
    if record.source_uuid and record.source_uuid != plan.vm.uuid:
        return f"{plan.vm.name} on {plan.source_host} is another VM now (UUID changed)"
    if (record.dest_host, record.new_name) != (plan.dest_host, plan.new_name):
        return f"it cloned to {record.new_name} on {record.dest_host}"
    if record.pool_path != plan.pool_path:
        return f"it staged its files in pool {record.pool} ({record.pool_path})"
    if plan.live:
        return (
            f"{plan.vm.name} runs now: a live clone copies a new point in time, "
            "so nothing staged before can be kept"
        )
    old = {f.final: f for f in record.files}
    new = {f.final_path: f for f in plan.files}
    if set(old) != set(new):
        return "the source's disks changed since (the files to copy differ)"
    for final, file in sorted(new.items()):
        size = old[final].size
        if size >= 0 and size != file.size:
            return (
                f"{file.source_path} changed size since ({format_bytes(size)} -> "
                f"{format_bytes(file.size)})"
            )
    return None


def adoption(old: JournalRecord, new: JournalRecord) -> list[tuple[StagedFile, str]]:
    """Pairs (the new job's staged file, the old job's staging path) by final name."""
    by_final = {f.final: f.staging for f in old.files if not f.committed}
    return [(f, by_final[f.final]) for f in new.files if f.final in by_final]


def keep_for_resume(plan: ClonePlan, journal: Journal) -> bool:
    """True when a failed ``--idempotent`` clone should keep its staged files to resume."""
    return plan.options.idempotent and resume_blocker(journal.record) is None


async def adopt_staged(
    hosts: Hosts,
    dst: Host,
    journal: Journal,
    old: Journal,
    total: int,
    note: Callable[[str, str], None],
) -> None:
    """Take over ``old``'s staged disk files, then roll back the rest of ``old``.

    Each file is marked ``resume`` in the new journal, renamed to the new job's staging name,
    then dropped from ``old``'s list: a file is always listed by a journal that may remove it
    (a crash in between leaves it where ``old`` lists it; the resume then finds no staged file
    and copies it whole). What else ``old`` left (a source checkpoint, staged TPM state,
    temporaries) is rolled back as usual; ``old`` ends ``adopted``. ``total``: the clone's data
    bytes (for the message).
    """
    from kvm_clone_tui.engine.clone import rollback

    agent = RemoteAgent(dst)
    record = journal.record
    record.adopted_from = old.record.job_id
    journal.save()
    staged_bytes = 0
    for staged, old_path in adoption(old.record, record):
        staged.resume = True
        journal.save()
        found = await dst.run(["stat", "-c", "%b %B", "--", old_path], check=False)
        if found.exit_status == 0:
            blocks, unit = (int(x) for x in found.stdout.split())
            staged_bytes += blocks * unit
            await agent.rename(old_path, staged.staging, root=record.pool_path)
        old.record.files = [f for f in old.record.files if f.staging != old_path]
        old.save()
    await rollback(hosts, old)  # its checkpoint, TPM state, temporaries: not its disks
    old.record.adopted_by = record.job_id
    old.step(ADOPTED, f"staged files taken over by job {record.job_id}")
    note(
        "resume",
        f"resuming job {old.record.job_id} (as job {record.job_id}): "
        f"{format_bytes(staged_bytes)} of {format_bytes(total)} already there; every block is "
        "compared with the source before it is kept",
    )


def _emit(on_event: EventCallback | None, job_id: str, step: str, message: str) -> None:
    if on_event is not None:
        on_event(JobEvent(job_id, step, message))


async def clone_or_resume(
    hosts: Hosts,
    source: str,
    dest: str,
    vm: str,
    options: CloneOptions,
    on_event: EventCallback | None = None,
    *,
    auto_rollback: bool = True,
    job: Journal | None = None,
) -> CloneResult:
    """Clone, resuming an interrupted job of the same clone (``job``, else the newest found).

    Other unfinished jobs to the same destination VM are rolled back first; a job that cannot
    resume is rolled back too and the clone starts afresh; the events say why.
    """
    from kvm_clone_tui.engine.clone import recover_job, run_clone
    from kvm_clone_tui.engine.plan import build_plan

    new_name = options.new_name or vm
    found = [
        j
        for j in unfinished()
        if j.record.dest_host == dest
        and j.record.new_name == new_name
        and (job is None or j.record.job_id != job.record.job_id)
    ]
    candidates = ([job] if job is not None else []) + found[::-1]  # the newest first
    chosen: Journal | None = None
    for journal in candidates:
        why = resume_blocker(journal.record)
        if chosen is None and why is None:
            chosen = journal
            continue
        if why is not None:
            _emit(on_event, journal.record.job_id, "rollback", f"cannot resume: {why}")
        await recover_job(hosts, journal, on_event)
    plan = await build_plan(hosts, source, dest, vm, options)
    if chosen is not None and plan.ok and not plan.already_done:
        why = plan_mismatch(chosen.record, plan)
        if why is None:
            return await run_clone(hosts, plan, on_event, auto_rollback=auto_rollback, adopt=chosen)
        _emit(on_event, chosen.record.job_id, "rollback", f"cannot resume: {why}; cloning afresh")
        await recover_job(hosts, chosen, on_event)
    elif chosen is not None and plan.already_done:
        await recover_job(hosts, chosen, on_event)  # a leftover of a clone that is complete
    return await run_clone(hosts, plan, on_event, auto_rollback=auto_rollback)


def find_job(job_id: str) -> Journal:
    """The unfinished job ``job_id``; refuses one that another live process still runs."""
    idle = {j.record.job_id for j in unfinished()}
    for journal in unfinished(include_running=True):
        if journal.record.job_id == job_id:
            if job_id not in idle:
                raise ResumeError(
                    f"job {job_id} is still running in process {journal.record.owner_pid}: "
                    "it is not touched"
                )
            return journal
    raise ResumeError(f"no unfinished job {job_id!r} (`kvm-clone resume --list` shows them)")


async def resume_job(
    hosts: Hosts,
    job_id: str,
    on_event: EventCallback | None = None,
    *,
    auto_rollback: bool = True,
) -> CloneResult:
    """Resume unfinished clone ``job_id`` (the clone it was, planned again)."""
    journal = find_job(job_id)
    record = journal.record
    options = options_from_record(record)
    return await clone_or_resume(
        hosts,
        record.source_host,
        record.dest_host,
        record.vm,
        options,
        on_event,
        auto_rollback=auto_rollback,
        job=journal,
    )
