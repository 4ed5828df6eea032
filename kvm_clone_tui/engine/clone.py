"""Running a clone plan as a transaction: stage, copy, verify, commit, define; or roll back.

Order of a clone, each step journalled before it is taken:

1. **copy** every file into the destination pool under a partial name
   (``.kvmclone-partial-<job>-<final name>``); the receiver verifies each stream's hash;
2. re-point copied backing chains (``qemu-img rebase -u``) on the staged files;
3. **commit**: with ``--force``, move the replaced VM's files aside and undefine it (its XML is
   in the journal); rename staged files to their final names; define the new VM;
4. drop what ``--force`` replaced; start the clone if asked.

Any failure, cancellation (Ctrl-C) or timeout before the end runs :func:`rollback`: the new VM
is undefined, staged and committed files are removed, a replaced VM is restored. The source is
only ever read.
"""

from __future__ import annotations

import asyncio
import functools
import posixpath
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from kvm_clone_tui.api.errors import CloneFailed, CloneRefused, HostError, KVMCloneError
from kvm_clone_tui.api.plans import ClonePlan, FilePlan
from kvm_clone_tui.api.results import CloneResult, TransferResult
from kvm_clone_tui.engine import clone_checkpoint
from kvm_clone_tui.engine.block_compare import resume_file
from kvm_clone_tui.engine.host_port import Host, Hosts
from kvm_clone_tui.engine.journal import (
    COMMITTED,
    COMMITTING,
    COPIED,
    COPYING,
    DONE,
    FAILED,
    PLANNED,
    ROLLED_BACK,
    Journal,
    JournalRecord,
    StagedFile,
)
from kvm_clone_tui.engine.live_source import LiveSource, backup_begin, backup_end
from kvm_clone_tui.engine.progress import DiskProgress, JobEvent
from kvm_clone_tui.engine.remote_agent import RemoteAgent, shared_digest
from kvm_clone_tui.engine.resume import adopt_staged, keep_for_resume, options_record
from kvm_clone_tui.engine.tpm_state import (
    commit_tpm_state,
    drop_replaced_tpm_state,
    rollback_tpm_state,
    stage_tpm_state,
)
from kvm_clone_tui.engine.transfer import (
    DirectRouteUnavailable,
    FileTransfer,
    TransferOptions,
    copy_file,
)

EventCallback = Callable[[JobEvent], None]
ASIDE_PREFIX = ".kvmclone-replaced-"


class _Events:
    """Emits JobEvents and keeps the latest progress of every file."""

    def __init__(self, job_id: str, callback: EventCallback | None, journal: Journal | None):
        self.job_id = job_id
        self.callback = callback
        self.journal = journal
        self.disks: dict[str, DiskProgress] = {}
        self.consistency: str | None = None

    def step(self, step: str, message: str) -> None:
        if self.journal is not None:
            self.journal.note(step, message)
        self._emit(step, message)

    def progress(self, disk: DiskProgress) -> None:
        self.disks[disk.target] = disk
        self._emit("copy", "")

    def _emit(self, step: str, message: str) -> None:
        if self.callback is not None:
            self.callback(JobEvent(self.job_id, step, message, tuple(self.disks.values())))


def _journal_for(plan: ClonePlan) -> Journal:
    return Journal(
        JournalRecord(
            job_id=plan.job_id,
            kind="clone",
            source_host=plan.source_host,
            dest_host=plan.dest_host,
            vm=plan.vm.name,
            new_name=plan.new_name,
            new_uuid=plan.new_uuid,
            pool=plan.pool,
            pool_path=plan.pool_path,
            files=[
                StagedFile(f.staging_path, f.final_path, source=f.source_path, size=f.size)
                for f in plan.files
            ],
            live=plan.live,
            source_uuid=plan.vm.uuid,
            options=options_record(plan.options),
        )
    )


async def run_clone(
    hosts: Hosts,
    plan: ClonePlan,
    on_event: EventCallback | None = None,
    *,
    auto_rollback: bool = True,
    adopt: Journal | None = None,
) -> CloneResult:
    """Carry out ``plan``; on any failure or cancellation roll back, then re-raise.

    With ``auto_rollback=False`` a failure (not a cancellation) leaves the staged files and
    the journal for the caller to decide: it raises :class:`CloneFailed`, and
    ``KVMCloneClient.rollback_job(job_id)`` rolls back later (the TUI's rollback prompt).
    With ``--idempotent`` a failure or cancellation before the commit keeps them to resume.
    ``adopt``: an interrupted job of the same clone whose staged files this one takes over
    and finishes (``engine/resume.py``).
    """
    if not plan.ok:
        raise CloneRefused(plan)
    started_at = time.monotonic()
    if plan.already_done:
        return _already_done(plan, on_event)
    journal = _journal_for(plan)
    events = _Events(plan.job_id, on_event, None)  # no journal file until the hosts answer
    try:
        # Connecting is inside the transaction: nothing is journalled before it succeeds.
        src, dst = await hosts.host(plan.source_host), await hosts.host(plan.dest_host)
    except Exception as exc:
        events.step("failed", str(exc))
        raise
    events.journal = journal
    journal.step(PLANNED, plan.describe())
    dst_agent = RemoteAgent(dst)
    try:
        plan = await _stage(hosts, src, dst, plan, journal, events, adopt)
        results, route = await _copy_all(src, dst, dst_agent, plan, journal, events)
        _verified(journal, events, results)
        await _rebase(dst, plan, events)
        await _commit(dst, dst_agent, plan, journal, events)
        started = await _post_commit(dst, dst_agent, plan, journal, events)
    except BaseException as exc:
        failure = await _on_failure(hosts, plan, journal, events, exc, auto_rollback)
        if failure is not None:
            raise failure from exc
        raise
    return _result(plan, journal, events, results, route, started, started_at)


def _already_done(plan: ClonePlan, on_event: EventCallback | None) -> CloneResult:
    """The destination already holds this clone (``--idempotent``): nothing to do."""
    _Events(plan.job_id, on_event, None).step(
        "done", f"{plan.new_name} on {plan.dest_host} is already a clone of {plan.vm.name}"
    )
    return CloneResult(
        plan.job_id,
        plan.source_host,
        plan.dest_host,
        plan.vm.name,
        plan.new_name,
        "",
        "none",
        (),
        0,
        0.0,
        False,
        True,
        tuple(w.message for w in plan.warnings),
    )


async def _stage(
    hosts: Hosts,
    src: Host,
    dst: Host,
    plan: ClonePlan,
    journal: Journal,
    events: _Events,
    adopt: Journal | None,
) -> ClonePlan:
    """Stage phase: warnings, an adopted job's files, the TPM state, the source checkpoint."""
    for warning in plan.warnings:
        events.step("warning", warning.message)
    if adopt is not None:
        await adopt_staged(hosts, dst, journal, adopt, plan.total_bytes, events.step)
    await _stage_tpm(src, dst, plan, journal, events)
    plan = await clone_checkpoint.before_copy(src, plan, journal)
    if journal.record.source_checkpoint:
        events.step("stage", f"checkpoint {journal.record.source_checkpoint} on the source")
    return plan


def _verified(journal: Journal, events: _Events, results: list[TransferResult]) -> None:
    """Verify phase: every stream's hash was checked by its receiver; journal and say so."""
    journal.step(COPIED, "every file arrived and its hash matched")
    events.step("verify", ", ".join(f"{r.label} {r.digest[:16]}" for r in results))


async def _commit(
    dst: Host, dst_agent: RemoteAgent, plan: ClonePlan, journal: Journal, events: _Events
) -> None:
    """Commit phase: move a replaced VM aside, rename the staged files, define the clone."""
    xml = plan.dest_xml
    journal.step(COMMITTING, "renaming staged files and defining the VM")
    if plan.replace_existing:
        await _move_replaced_aside(dst, dst_agent, plan, journal, events)
    for staged in journal.record.files:
        await dst_agent.rename(staged.staging, staged.final, root=plan.pool_path)
        staged.committed = True
        journal.save()
    await commit_tpm_state(dst, journal)
    await dst.define(xml)
    journal.record.defined = True
    journal.step(COMMITTED, f"{plan.new_name} defined on {plan.dest_host}")
    events.step("define", f"{plan.new_name} defined on {plan.dest_host} ({plan.new_uuid})")


async def _post_commit(
    dst: Host, dst_agent: RemoteAgent, plan: ClonePlan, journal: Journal, events: _Events
) -> bool:
    """Post-commit phase: record the checkpoint, drop what --force replaced, start if asked.

    Returns whether the clone was started.
    """
    await _record_checkpoint(dst, plan, journal, events)
    for aside in journal.record.replaced_files:
        await dst_agent.remove(aside.staging, root=plan.pool_path, missing_ok=True)
    await drop_replaced_tpm_state(dst, journal.record.replaced_xml)
    started = False
    if plan.options.start:
        await dst.start(plan.new_uuid)
        started = True
        events.step("start", f"{plan.new_name} started")
    journal.step(DONE, "clone complete")
    events.step("done", f"cloned {plan.vm.name} to {plan.dest_host} as {plan.new_name}")
    return started


async def _on_failure(
    hosts: Hosts,
    plan: ClonePlan,
    journal: Journal,
    events: _Events,
    exc: BaseException,
    auto_rollback: bool,
) -> CloneFailed | None:
    """After a failure or cancellation: keep the staged files (to resume, or for the operator
    to decide) or roll back. Returns the :class:`CloneFailed` to raise, None to re-raise."""
    cancelled = isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt))
    events.step("failed", "cancelled" if cancelled else str(exc))
    if keep_for_resume(plan, journal):
        _keep_for_resume(journal, events, "cancelled" if cancelled else str(exc))
        if isinstance(exc, Exception):
            return CloneFailed(plan.job_id, staged_paths(journal), exc)
        return None
    if not auto_rollback and not cancelled and isinstance(exc, Exception):
        journal.step(FAILED, f"kept for the operator to decide: {exc}")
        return CloneFailed(plan.job_id, staged_paths(journal), exc)
    await asyncio.shield(rollback(hosts, journal, events))
    return None


def _result(
    plan: ClonePlan,
    journal: Journal,
    events: _Events,
    results: list[TransferResult],
    route: str,
    started: bool,
    started_at: float,
) -> CloneResult:
    return CloneResult(
        job_id=plan.job_id,
        source_host=plan.source_host,
        dest_host=plan.dest_host,
        vm=plan.vm.name,
        new_name=plan.new_name,
        uuid=plan.new_uuid,
        route=route,
        files=tuple(results),
        bytes_copied=sum(r.bytes_written for r in results),
        seconds=time.monotonic() - started_at,
        started=started,
        warnings=tuple(w.message for w in plan.warnings),
        consistency=events.consistency,
        resumed_from=journal.record.adopted_from,
        bytes_reused=sum(f.reused for f in journal.record.files),
    )


def staged_paths(journal: Journal) -> list[str]:
    """The files a job left on the destination (committed ones under their final names)."""
    return [f.final if f.committed else f.staging for f in journal.record.files]


def _keep_for_resume(journal: Journal, events: _Events, why: str) -> None:
    """Journal an interrupted ``--idempotent`` clone as failed, its staged files kept."""
    journal.step(FAILED, f"kept for resume: {why}")
    job = journal.record.job_id
    events.step(
        "failed",
        f"staged files kept: run the same command again or `kvm-clone resume {job}` to "
        "continue from what arrived, `kvm-clone recover` to roll back",
    )


async def _stage_tpm(
    src: Host, dst: Host, plan: ClonePlan, journal: Journal, events: _Events
) -> None:
    """Stage the emulated TPM's state (small) before the disks; journalled for rollback."""
    if plan.tpm is None:
        return
    digest = await stage_tpm_state(src, dst, plan.tpm, journal)
    events.step("stage", f"tpm: state staged in {plan.tpm.staging_dir} (sha256 {digest[:16]})")


async def _copy_all(
    src: Host, dst: Host, dst_agent: RemoteAgent, plan: ClonePlan, journal: Journal, events: _Events
) -> tuple[list[TransferResult], str]:
    """Copy phase: every file into its staged name (a live source through a backup job);
    returns the transfer results and the route that was used."""
    src_agent = RemoteAgent(src)
    options = _transfer_options(plan)
    journal.step(COPYING, f"route {plan.route}: {plan.route_reason}")
    events.step(
        "stage",
        f"copying {len(plan.files)} file(s) into pool {plan.pool} "
        f"({plan.route}: {plan.route_reason})",
    )
    gate = asyncio.Semaphore(max(1, plan.options.parallel))
    state = {"options": options}
    live: LiveSource | None = None
    index_digest = await shared_digest(src_agent, dst_agent)  # what a hash-mode sync will use

    async def one(file: FilePlan) -> TransferResult:
        item = _file_transfer(plan, file, live, index_digest)
        copy = _copier(journal, file, events)
        async with gate:
            try:
                return await copy(
                    src, src_agent, dst, dst_agent, item, state["options"], events.progress
                )
            except DirectRouteUnavailable as exc:
                if plan.options.transfer == "direct":
                    raise
                state["options"] = replace(state["options"], direct=None)
                events.step("warning", f"direct copy impossible ({exc.message}); relaying")
                return await copy(
                    src, src_agent, dst, dst_agent, item, state["options"], events.progress
                )

    if plan.live:
        live = await _begin_live_source(src, plan, journal, events)
    tasks = [asyncio.ensure_future(one(f)) for f in plan.files]
    try:
        results = await _gather_or_cancel(tasks)
    finally:
        if live is not None:
            await asyncio.shield(backup_end(src, plan.vm.name))
            journal.record.source_backup = False
            journal.save()
    await _convert_raw_staged(dst, dst_agent, plan, events)
    route = "relay" if state["options"].direct is None else "direct"
    return results, route


def _transfer_options(plan: ClonePlan) -> TransferOptions:
    return TransferOptions(
        direct=plan.direct,
        compress=plan.compress,
        bandwidth_limit=plan.options.bandwidth_limit,
        verify=plan.options.verify,
        no_progress_timeout=plan.options.no_progress_timeout,
    )


def _file_transfer(
    plan: ClonePlan, file: FilePlan, live: LiveSource | None, index_digest: str
) -> FileTransfer:
    """What to copy for ``file``: from the source file, or from the live source's export."""
    from_file = not file.live_export and file.raw_staging_path is None
    return FileTransfer(
        file.label,
        file.source_path,
        file.raw_staging_path or file.staging_path,
        plan.pool_path,
        file.size,
        file.allocated,
        nbd_socket=live.socket if live is not None and file.live_export else None,
        nbd_export=file.live_export,
        keep_partial=True,  # a kill -9 leaves what arrived for a resume (or a rollback)
        index=index_digest if from_file and file.role == "disk" else None,
    )


async def _begin_live_source(
    src: Host, plan: ClonePlan, journal: Journal, events: _Events
) -> LiveSource:
    """A running source: journal the temporaries, take the point in time (a backup job)."""
    journal.record.temporaries = [f.raw_staging_path for f in plan.files if f.raw_staging_path]
    journal.record.source_backup = True
    journal.save()
    exports = [f.live_export for f in plan.files if f.live_export]
    first = next(f.source_path for f in plan.files if f.live_export)
    live = await backup_begin(
        src,
        plan.vm.name,
        plan.job_id,
        exports,
        [d.target for d in plan.vm.disks],
        posixpath.dirname(first),
        checkpoint_xml=clone_checkpoint.live_xml(plan, journal),
    )
    events.consistency = live.consistency
    events.step("stage", f"{plan.vm.name} keeps running: point in time taken ({live.consistency})")
    return live


async def _gather_or_cancel(tasks: list[asyncio.Task[TransferResult]]) -> list[TransferResult]:
    """The results of all ``tasks``; when one fails (or this is cancelled) the rest are
    cancelled and awaited before the error propagates."""
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _convert_raw_staged(
    dst: Host, dst_agent: RemoteAgent, plan: ClonePlan, events: _Events
) -> None:
    """Convert the raw files a live copy staged into their final format (then drop them)."""
    for file in plan.files:
        raw = file.raw_staging_path
        if raw is not None:
            await dst.run(
                [
                    "qemu-img",
                    "convert",
                    "-q",
                    "-f",
                    "raw",
                    "-O",
                    file.format,
                    raw,
                    file.staging_path,
                ],
                timeout=None,
            )
            await dst_agent.remove(raw, root=plan.pool_path, missing_ok=True)
            events.step("stage", f"{file.label}: converted to {file.format}")


def _copier(
    journal: Journal, file: FilePlan, events: _Events
) -> Callable[..., Awaitable[TransferResult]]:
    """How to move ``file``: a whole copy, or finishing a staged file a resume adopted."""
    staged = next((f for f in journal.record.files if f.staging == file.staging_path), None)
    if staged is None or not staged.resume:
        return copy_file
    return functools.partial(resume_file, staged=staged, journal=journal, note=events.step)


async def _record_checkpoint(dst: Host, plan: ClonePlan, journal: Journal, events: _Events) -> None:
    """Name the source checkpoint in the clone's metadata (a failure only costs bitmap mode)."""
    try:
        name = await clone_checkpoint.record(dst, plan, journal)
    except KVMCloneError as exc:
        events.step("warning", f"the first sync will use hash mode: {exc}")
        return
    if name is not None:
        events.step("commit", f"checkpoint {name} on {plan.source_host}: syncs move only changes")


async def _rebase(dst: Host, plan: ClonePlan, events: _Events) -> None:
    for file in plan.files:
        if file.rebase_to is None:
            continue
        backing, fmt = file.rebase_to
        await dst.run(
            [
                "qemu-img",
                "rebase",
                "-u",
                "-f",
                file.format,
                "-F",
                fmt,
                "-b",
                backing,
                file.staging_path,
            ]
        )
        events.step("stage", f"{file.label}: backing file re-pointed to {backing}")


async def _move_replaced_aside(
    dst: Host, agent: RemoteAgent, plan: ClonePlan, journal: Journal, events: _Events
) -> None:
    """Keep the VM that --force replaces restorable: XML in the journal, files moved aside."""
    old_xml = await dst.domain_xml(plan.new_name, inactive=True)
    journal.record.replaced_xml = old_xml
    journal.save()
    finals = {f.final_path for f in plan.files}
    for path in sorted(finals):
        exists = await dst.run(["test", "-e", path], check=False)
        if exists.exit_status != 0:
            continue
        aside = path.rsplit("/", 1)
        aside_path = f"{aside[0]}/{ASIDE_PREFIX}{plan.job_id}-{aside[1]}"
        journal.record.replaced_files.append(StagedFile(aside_path, path))
        journal.save()
        await agent.rename(path, aside_path, root=plan.pool_path)
    await dst.undefine_keeping_state(plan.new_name)  # restorable until commit
    events.step("commit", f"the old {plan.new_name} is undefined; its files are kept aside")


async def recover_job(
    hosts: Hosts, journal: Journal, on_event: EventCallback | None = None
) -> None:
    """Roll back an interrupted job found in the journal (after a crash or kill -9)."""
    record = journal.record
    if on_event is not None:
        on_event(
            JobEvent(
                record.job_id,
                "rollback",
                f"rolling back interrupted job {record.job_id} ({record.state})",
            )
        )
    await rollback(hosts, journal)
    if on_event is not None:
        on_event(
            JobEvent(
                record.job_id,
                "rollback",
                "rolled back: nothing of this job is left on the destination",
            )
        )


async def rollback(hosts: Hosts, journal: Journal, events: _Events | None = None) -> None:
    """Undo whatever the journal says was done on the destination; idempotent."""
    record = journal.record
    emit = events.step if events is not None else journal.note
    dst = await hosts.host(record.dest_host)
    agent = RemoteAgent(dst)
    problems: list[str] = []
    if record.defined:
        await dst.remove_domain(record.new_uuid)
        record.defined = False
        journal.save()
    for staged in record.files:
        path = staged.final if staged.committed else staged.staging
        try:
            await agent.remove(path, root=record.pool_path, missing_ok=True)
            staged.committed = False
        except (HostError, KVMCloneError, Exception) as exc:
            problems.append(f"{path}: {exc}")
    problems += await rollback_tpm_state(dst, record)
    for temporary in record.temporaries:
        try:
            await agent.remove(temporary, root=record.pool_path, missing_ok=True)
        except Exception as exc:
            problems.append(f"{temporary}: {exc}")
    if record.source_backup:
        try:
            await backup_end(await hosts.host(record.source_host), record.vm)
            record.source_backup = False
        except Exception as exc:
            problems.append(f"ending the backup job of {record.vm} on {record.source_host}: {exc}")
    if record.source_checkpoint:
        try:
            await clone_checkpoint.forget(await hosts.host(record.source_host), journal)
        except Exception as exc:
            problems.append(f"deleting checkpoint {record.source_checkpoint} of {record.vm}: {exc}")
    for aside in record.replaced_files:
        try:
            await agent.rename(aside.staging, aside.final, root=record.pool_path)
        except Exception as exc:
            problems.append(f"restoring {aside.final}: {exc}")
    if record.replaced_xml:
        xml = record.replaced_xml
        try:
            await dst.define(xml)
            record.replaced_xml = None
        except Exception as exc:
            problems.append(f"re-defining the replaced VM: {exc}")
    if problems:
        journal.note("rollback", "incomplete: " + "; ".join(problems))
        raise HostError(
            record.dest_host,
            "rollback incomplete: "
            + "; ".join(problems)
            + f" (journal {journal.path}; run `kvm-clone recover`)",
        )
    journal.step(ROLLED_BACK, "nothing of this job is left on the destination")
    emit("rollback", "rolled back: nothing of this job is left on the destination")
