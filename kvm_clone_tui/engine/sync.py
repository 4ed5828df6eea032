"""Incremental sync: bring an earlier clone up to date, moving only the blocks that differ.

Bitmap mode: the last clone or sync left a checkpoint on the source (checkpoints.py) and the
clone's files are as that sync left them (a stamp of their size, times and inode is recorded in
the clone's metadata): the source exports its disks with the checkpoint's dirty bitmap (an
incremental pull-mode backup when it runs, qemu-nbd when it is shut off), only the marked blocks
move, written through qemu-nbd into a qcow2 clone (in place into a raw one), and a new checkpoint
taken at the same point in time replaces the old one once the sync is verified. Nothing is read
that did not change: the time does not grow with the disk's size.

Hash mode (otherwise, and for shut-off sources only): when the clone's block index still
describes a clone file (block_index.py), the source reads and hashes its file once and sends each
block whose digest differs from the index as it goes; otherwise both hosts hash fixed-size blocks
of the file on their own CPU at the same time, the client compares the lists, and the source
sends only the differing blocks. The destination writes them in place (blocks that became zero
are punched out) and keeps the index up to date. Disk files are made byte-identical, so qcow2
images, backing layers and NVRAM files sync like raw ones. The clone's definition follows the
source's (memory, vCPUs, devices) but keeps its own name, UUID, MAC addresses and disk paths.

While a sync writes, the clone's ``kvmclone:clone`` metadata says ``sync-state="in-progress"``:
an interrupted sync never passes for a finished one, and the next sync (hash mode compares
everything again) resumes it and converges.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import time
from collections.abc import Callable
from dataclasses import replace

from kvm_clone_tui.agent.protocol import AgentFailure
from kvm_clone_tui.api.errors import HostError, KVMCloneError, SyncRefused
from kvm_clone_tui.api.plans import FilePair, SyncPlan
from kvm_clone_tui.api.results import FileSync, SyncResult, TransferResult
from kvm_clone_tui.api.units import format_bytes
from kvm_clone_tui.engine import checkpoints, nbd_export, sync_undo
from kvm_clone_tui.engine.block_index import Hashes, file_hashes
from kvm_clone_tui.engine.clone_metadata import replace_clone_metadata, set_clone_metadata
from kvm_clone_tui.engine.domain_rewrite import (
    read_clone_metadata,
)
from kvm_clone_tui.engine.host_port import Hosts
from kvm_clone_tui.engine.live_source import backup_begin, backup_end
from kvm_clone_tui.engine.progress import DiskProgress, JobEvent
from kvm_clone_tui.engine.remote_agent import RemoteAgent, shared_digest
from kvm_clone_tui.engine.transfer import (
    DirectRouteUnavailable,
    FileTransfer,
    TransferOptions,
    copy_file,
)

EventCallback = Callable[[JobEvent], None]


def _ranges(
    mine: list[str | None], theirs: list[str | None], size: int, their_size: int, bs: int
) -> list[tuple[int, int]]:
    """Merged byte ranges whose blocks differ (or lie beyond the clone's old size)."""
    out: list[tuple[int, int]] = []
    for i, digest in enumerate(mine):
        other = theirs[i] if i < len(theirs) and (i + 1) * bs <= their_size else "beyond"
        if digest == other:
            continue
        off, n = i * bs, min(bs, size - i * bs)
        if out and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((off, n))
    return out


def _in_place(
    pair: FilePair,
    size: int,
    allocated: int,
    undo_path: str | None,
    algo: str,
    compared: Hashes,
    *,
    ranges: tuple[tuple[int, int], ...] | None = None,
    against: str | None = None,
) -> FileTransfer:
    """The copy that brings ``pair``'s clone file up to date where it lies, keeping its block
    index (``algo``); the receiver refuses it if the clone changed since ``compared``."""
    return FileTransfer(
        pair.label,
        pair.source_path,
        pair.dest_path,
        posixpath.dirname(pair.dest_path),
        size,
        allocated,
        ranges=ranges,
        inplace=True,
        undo_path=undo_path,
        index=algo,
        against=against,
        dest_stamp=compared.stamp or None,
    )


async def run_sync(
    hosts: Hosts, plan: SyncPlan, on_event: EventCallback | None = None
) -> SyncResult:
    """Carry out a sync plan.

    An interruption leaves the clone marked in-progress (the next sync resumes), or, with
    ``--checkpoint``, puts it back as it was before the sync. The source's checkpoint moves
    forward only after the sync is verified.
    """
    if not plan.ok:
        raise SyncRefused(plan)
    started = time.monotonic()
    run = _SyncRun(hosts, plan, on_event)
    return await run.go(started)


class _SyncRun:
    """The steps of one sync, and what to undo when it fails."""

    def __init__(self, hosts: Hosts, plan: SyncPlan, on_event: EventCallback | None) -> None:
        self.hosts, self.plan, self.on_event = hosts, plan, on_event
        self.disks: dict[str, DiskProgress] = {}
        self.exports: list[nbd_export.NBDExport] = []
        first = plan.pairs[0].dest_path if plan.pairs else "/"
        self.manifest_path = sync_undo.manifest_path(first, plan.target_uuid)
        self.manifest: dict[str, object] | None = None
        self.created_checkpoint = False
        self.consistency: str | None = None
        self.direct = plan.direct

    def emit(self, step: str, message: str = "") -> None:
        if self.on_event is not None:
            self.on_event(JobEvent(self.plan.job_id, step, message, tuple(self.disks.values())))

    def progress(self, disk: DiskProgress) -> None:
        self.disks[disk.target] = disk
        self.emit("copy")

    async def go(self, started: float) -> SyncResult:
        plan = self.plan
        await self._connect()
        old_xml = await self.dst.domain_xml(plan.target, inactive=True)
        meta = read_clone_metadata(old_xml)
        await self._forget_interrupted(meta)
        await self._undo_interrupted_checkpointed()
        await self._begin_checkpoint(old_xml, meta)
        await self._mark_in_progress(meta)
        try:
            files = await self._transfer()
        except BaseException as exc:
            cancelled = isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt))
            self.emit("failed", "cancelled" if cancelled else str(exc))
            await asyncio.shield(self._after_failure(old_xml))
            raise
        self.emit("verify", "every changed block arrived and its hash matched")
        await self._define()
        await self._mark_synced(meta)
        return self._result(files, started)

    async def _connect(self) -> None:
        self.src = await self.hosts.host(self.plan.source_host)
        self.dst = await self.hosts.host(self.plan.dest_host)
        self.src_agent, self.dst_agent = RemoteAgent(self.src), RemoteAgent(self.dst)

    async def _undo_interrupted_checkpointed(self) -> None:
        """Put back a clone that a cut-off ``--checkpoint`` sync left half written, then drop
        the previous sync's checkpoint (only the last one counts)."""
        earlier = await sync_undo.read_manifest(self.dst, self.manifest_path)
        if earlier is not None and earlier.get("state") == "syncing":
            # A checkpointed sync was cut off before it could put the clone back: do it now,
            # so that this sync starts from a state that was whole.
            restored = await sync_undo.apply(self.dst, self.dst_agent, earlier)
            self.emit(
                "rollback",
                f"the interrupted checkpointed sync {earlier.get('job')} is undone first "
                f"({format_bytes(restored)} restored)",
            )
        if await sync_undo.discard(self.dst, self.dst_agent, self.manifest_path):
            self.emit("stage", "the previous sync's checkpoint is discarded (only the last counts)")

    async def _begin_checkpoint(self, old_xml: str, meta: dict[str, str]) -> None:
        """With ``--checkpoint``: start the manifest that can put the clone back."""
        plan = self.plan
        if plan.options.checkpoint:
            self.manifest = await sync_undo.begin(
                self.dst_agent,
                self.manifest_path,
                job_id=plan.job_id,
                target=plan.target,
                uuid=plan.target_uuid,
                domain_xml=old_xml,
                metadata=meta,
                files=sync_undo.undo_files(plan),
            )

    async def _mark_in_progress(self, meta: dict[str, str]) -> None:
        """Mark the clone ``sync-state="in-progress"`` before anything is written."""
        plan = self.plan
        working = {**meta, "sync-state": "in-progress", "sync-job": plan.job_id}
        working["sync-mode"] = plan.mode
        if plan.new_checkpoint:
            working["sync-pending"] = plan.new_checkpoint
        await replace_clone_metadata(self.dst, plan.target_uuid, working)
        self.emit("stage", f"{plan.target} marked as being synced (job {plan.job_id})")
        self.emit(
            "plan", f"mode {plan.mode}: {plan.mode_reason}; {plan.route}: {plan.route_reason}"
        )

    async def _define(self) -> None:
        """Define the clone after the source's definition (stale bitmaps stripped first)."""
        plan = self.plan
        if plan.mode == "hash":
            for pair in plan.pairs:
                if dict(plan.dest_formats).get(pair.label) == "qcow2":
                    root = posixpath.dirname(pair.dest_path)
                    await checkpoints.strip_bitmaps(self.dst, pair.dest_path, root)
        xml = plan.dest_xml
        await self.dst.define(xml)
        self.emit("define", f"{plan.target}'s definition follows {plan.vm.name}'s")

    async def _mark_synced(self, meta: dict[str, str]) -> None:
        """Record the finished sync: stamp and checkpoint in the metadata, the manifest sealed,
        the previous checkpoint dropped."""
        plan = self.plan
        stamp = await sync_undo.disk_stamp(self.dst_agent, [p.dest_path for p in plan.pairs])
        final = {k: v for k, v in meta.items() if k not in ("sync-job", "sync-pending")}
        final.update({"sync-state": "synced", "sync-mode": plan.mode, "dest-stamp": stamp})
        final.pop("checkpoint", None)
        if plan.new_checkpoint:
            final["checkpoint"] = plan.new_checkpoint
        await replace_clone_metadata(self.dst, plan.target_uuid, final)
        if self.manifest is not None:
            await sync_undo.seal(self.dst_agent, self.manifest_path, dict(self.manifest), stamp)
        old = meta.get("checkpoint")
        if old and old != plan.new_checkpoint:
            await self._drop_checkpoint(old, "the previous checkpoint")
        if plan.new_checkpoint:
            self.emit(
                "commit",
                f"checkpoint {plan.new_checkpoint} on {plan.source_host}: the "
                "next sync can move only what changes from now on",
            )

    def _result(self, files: list[FileSync], started: float) -> SyncResult:
        plan = self.plan
        changed = sum(f.changed_bytes for f in files)
        self.emit(
            "done",
            f"synced {plan.vm.name} to {plan.dest_host} as {plan.target} "
            f"({plan.mode} mode): {format_bytes(changed)} changed",
        )
        return SyncResult(
            job_id=plan.job_id,
            source_host=plan.source_host,
            dest_host=plan.dest_host,
            vm=plan.vm.name,
            target=plan.target,
            mode=plan.mode,
            files=tuple(files),
            changed_bytes=changed,
            bytes_sent=sum(f.bytes_sent for f in files),
            seconds=time.monotonic() - started,
            mode_reason=plan.mode_reason,
            checkpoint=plan.new_checkpoint,
            revertible=self.manifest is not None,
            consistency=self.consistency,
        )

    async def _forget_interrupted(self, meta: dict[str, str]) -> None:
        """Delete a checkpoint that an interrupted sync created but never recorded."""
        pending = meta.get("sync-pending")
        if pending and pending != meta.get("checkpoint"):
            await self._drop_checkpoint(pending, "an interrupted sync's checkpoint")

    async def _drop_checkpoint(self, name: str, what: str) -> None:
        try:
            await checkpoints.delete(self.src, self.plan.vm.name, name, self.plan.bitmap_disks)
        except KVMCloneError as exc:
            self.emit("warning", f"{what} {name} stays on {self.plan.source_host}: {exc}")

    async def _after_failure(self, old_xml: str) -> None:
        for export in self.exports:
            await nbd_export.stop_quietly(export)
        if self.created_checkpoint and self.plan.new_checkpoint:
            await self._drop_checkpoint(self.plan.new_checkpoint, "the new checkpoint")
        if self.manifest is None:
            return
        try:  # --checkpoint: the clone goes back to its state before the sync
            restored = await sync_undo.apply(self.dst, self.dst_agent, dict(self.manifest))
            await self.dst.define(old_xml)
            await sync_undo.discard(self.dst, self.dst_agent, self.manifest_path)
            if "dest-stamp" in read_clone_metadata(old_xml):
                # The same contents as before, in files that were written: stamp them anew,
                # so that the base checkpoint still serves the next sync.
                paths = [p.dest_path for p in self.plan.pairs]
                stamp = await sync_undo.disk_stamp(self.dst_agent, paths)
                await set_clone_metadata(self.dst, self.plan.target_uuid, {"dest-stamp": stamp})
            self.emit(
                "rollback",
                f"{self.plan.target} is back as it was before the sync "
                f"({format_bytes(restored)} restored)",
            )
        except Exception as exc:
            self.emit("warning", f"could not put {self.plan.target} back: {exc}")

    async def _copy(self, item: FileTransfer) -> TransferResult:
        options = TransferOptions(
            direct=self.direct,
            bandwidth_limit=self.plan.options.bandwidth_limit,
            verify=self.plan.options.verify,
            no_progress_timeout=self.plan.options.no_progress_timeout,
        )
        try:
            return await copy_file(
                self.src, self.src_agent, self.dst, self.dst_agent, item, options, self.progress
            )
        except DirectRouteUnavailable as exc:
            if self.plan.options.transfer == "direct":
                raise
            self.direct = None
            self.emit("warning", f"direct copy impossible ({exc.message}); relaying")
            options = replace(options, direct=None)
            return await copy_file(
                self.src, self.src_agent, self.dst, self.dst_agent, item, options, self.progress
            )

    async def _transfer(self) -> list[FileSync]:
        plan = self.plan
        gate = asyncio.Semaphore(max(1, plan.options.parallel))
        undo = {f.label: f.undo_path for f in sync_undo.undo_files(plan)} if self.manifest else {}
        bitmap_labels = {d.target for d in plan.bitmap_disks} if plan.mode == "bitmap" else set()
        hashed = [p for p in plan.pairs if p.label not in bitmap_labels]
        # the clone's block indexes are looked up meanwhile (they never raise)
        lookups = {p.label: asyncio.ensure_future(self._dest_index(p)) for p in hashed}

        async def hashed_one(pair: FilePair) -> FileSync:
            async with gate:
                return await self._hash_sync(pair, undo.get(pair.label), await lookups[pair.label])

        try:
            if plan.mode == "hash" and plan.new_checkpoint:
                # Shut off (hash mode): every write from now on is in the new checkpoint's bitmap
                await checkpoints.create_offline(
                    self.src, plan.vm.name, plan.new_checkpoint, plan.bitmap_disks, plan.all_targets
                )
                self.created_checkpoint = True
            bitmap_files = []
            if plan.mode == "bitmap":
                bitmap_files = await self._bitmap_sync(
                    [p for p in plan.pairs if p.label in bitmap_labels], undo, gate
                )
            return bitmap_files + list(await asyncio.gather(*(hashed_one(p) for p in hashed)))
        finally:
            for task in lookups.values():
                task.cancel()
            await asyncio.gather(*lookups.values(), return_exceptions=True)

    async def _dest_index(self, pair: FilePair) -> tuple[Hashes, int] | None:
        """The clone file's block index if it still describes the file, with the source
        file's size; None otherwise (then both hosts hash)."""
        bs = self.plan.options.block_size
        try:
            algo = await shared_digest(self.src_agent, self.dst_agent)
            root = posixpath.dirname(pair.dest_path)
            theirs, found = await asyncio.gather(
                file_hashes(self.dst_agent, pair.dest_path, bs, algo, root, index_only=True),
                self.src_agent.stat([pair.source_path]),
            )
            size = int(found[pair.source_path]["size"])
        except (AgentFailure, HostError, KeyError, TypeError, ValueError):
            return None  # the two-phase way will say what is wrong
        return (theirs, size) if theirs.index == "used" else None

    async def _hash_sync(
        self, pair: FilePair, undo_path: str | None, indexed: tuple[Hashes, int] | None
    ) -> FileSync:
        bs = self.plan.options.block_size
        algo = await shared_digest(self.src_agent, self.dst_agent)
        if indexed is not None:
            return await self._one_pass_sync(pair, undo_path, *indexed, algo)
        root = posixpath.dirname(pair.dest_path)
        src_hashes, dst_hashes = await asyncio.gather(
            file_hashes(self.src_agent, pair.source_path, bs, algo),
            file_hashes(self.dst_agent, pair.dest_path, bs, algo, root),
        )
        size, mine = src_hashes.size, src_hashes.blocks
        their_size, theirs = dst_hashes.size, dst_hashes.blocks
        ranges = _ranges(mine, theirs, size, their_size, bs)
        changed = sum(n for _, n in ranges)
        self.emit(
            "plan",
            f"{pair.label}: {len(ranges)} range(s), {format_bytes(changed)} of "
            f"{format_bytes(size)} differ",
        )
        sent = 0
        if ranges or size != their_size:
            item = _in_place(pair, size, changed, undo_path, algo, dst_hashes, ranges=tuple(ranges))
            sent = (await self._copy(item)).bytes_written
        return FileSync(pair.label, len(mine), -(-changed // bs), changed, sent, size)

    async def _one_pass_sync(
        self, pair: FilePair, undo_path: str | None, theirs: Hashes, size: int, algo: str
    ) -> FileSync:
        """The clone's block index stands in for reading the clone: the source reads and
        hashes its file once and sends each block that differs as soon as it is hashed."""
        bs = self.plan.options.block_size
        self.emit(
            "plan",
            f"{pair.label}: the clone's block index stands in for reading it; "
            f"{self.plan.source_host} hashes its copy and sends what differs as it goes",
        )
        # allocated 0: the sender announces how much it reads
        item = _in_place(pair, size, 0, undo_path, algo, theirs, against=json.dumps(theirs.answer))
        done = await self._copy(item)
        changed = done.bytes_written + done.zero_bytes
        self.emit(
            "plan",
            f"{pair.label}: {format_bytes(changed)} of {format_bytes(size)} differed and moved",
        )
        return FileSync(
            pair.label, -(-size // bs), -(-changed // bs), changed, done.bytes_written, size
        )

    async def _bitmap_sync(
        self, pairs: list[FilePair], undo: dict[str, str], gate: asyncio.Semaphore
    ) -> list[FileSync]:
        """Send the blocks the base checkpoint's bitmap marks, at a new point in time."""
        plan = self.plan
        base, new = plan.base_checkpoint, plan.new_checkpoint
        assert base is not None and new is not None
        live = False
        if plan.source_running:
            sources = await self._live_bitmap_sources(pairs, base, new)
            live = True
        else:
            sources = await self._offline_bitmap_sources(pairs, base, new)
        try:
            return list(
                await asyncio.gather(*(self._bitmap_one(p, sources, undo, gate) for p in pairs))
            )
        finally:
            if live:
                await asyncio.shield(backup_end(self.src, plan.vm.name))
            for export in self.exports:
                if export.host is self.src:
                    await nbd_export.stop_quietly(export)

    async def _live_bitmap_sources(
        self, pairs: list[FilePair], base: str, new: str
    ) -> dict[str, tuple[str, str, str]]:
        """A running source: an incremental backup job from ``base`` takes the new checkpoint
        and exports each disk with its dirty bitmap. Returns (socket, export, context) by disk."""
        plan = self.plan
        sources: dict[str, tuple[str, str, str]] = {}
        xml = checkpoints.checkpoint_xml(new, plan.bitmap_disks, plan.all_targets)
        source = await backup_begin(
            self.src,
            plan.vm.name,
            plan.job_id,
            [p.label for p in pairs],
            plan.all_targets,
            posixpath.dirname(pairs[0].source_path),
            checkpoint_xml=xml,
            incremental=base,
        )
        self.created_checkpoint = True
        self.consistency = source.consistency
        self.emit(
            "stage", f"{plan.vm.name} keeps running: point in time taken ({source.consistency})"
        )
        for pair in pairs:
            if pair.label not in source.bitmaps:
                raise KVMCloneError(f"libvirt exported no dirty bitmap for {pair.label}")
            sources[pair.label] = (source.socket, pair.label, source.bitmaps[pair.label])
        return sources

    async def _offline_bitmap_sources(
        self, pairs: list[FilePair], base: str, new: str
    ) -> dict[str, tuple[str, str, str]]:
        """A shut-off source: create the new checkpoint, export each disk read-only through
        qemu-nbd with ``base``'s bitmap. Returns (socket, export, context) by disk."""
        plan = self.plan
        sources: dict[str, tuple[str, str, str]] = {}
        await checkpoints.create_offline(
            self.src, plan.vm.name, new, plan.bitmap_disks, plan.all_targets
        )
        self.created_checkpoint = True
        for pair in pairs:
            export = await nbd_export.serve(
                self.src,
                pair.source_path,
                "qcow2",
                f"{plan.job_id}-{pair.label}-read",
                writable=False,
                bitmap=base,
            )
            self.exports.append(export)
            sources[pair.label] = (export.socket, export.export, f"qemu:dirty-bitmap:{base}")
        return sources

    async def _bitmap_one(
        self,
        pair: FilePair,
        sources: dict[str, tuple[str, str, str]],
        undo: dict[str, str],
        gate: asyncio.Semaphore,
    ) -> FileSync:
        """Write one disk's marked blocks into the clone (through qemu-nbd into a qcow2)."""
        plan = self.plan
        sizes, formats = dict(plan.virtual_sizes), dict(plan.dest_formats)
        socket, export_name, context = sources[pair.label]
        writer: nbd_export.NBDExport | None = None
        async with gate:
            if formats.get(pair.label) == "qcow2":
                writer = await nbd_export.serve(
                    self.dst,
                    pair.dest_path,
                    "qcow2",
                    f"{plan.job_id}-{pair.label}-write",
                    writable=True,
                )
                self.exports.append(writer)
            item = FileTransfer(
                pair.label,
                pair.source_path,
                pair.dest_path,
                posixpath.dirname(pair.dest_path),
                sizes[pair.label],
                0,
                nbd_socket=socket,
                nbd_export=export_name,
                nbd_dirty=context,
                inplace=True,
                dest_nbd_socket=writer.socket if writer else None,
                dest_nbd_export=writer.export if writer else None,
                undo_path=undo.get(pair.label),
            )
            result = await self._copy(item)
            if writer is not None:
                await nbd_export.stop(writer)  # the image is closed and flushed
            self.emit("plan", f"{pair.label}: {format_bytes(result.bytes_written)} changed")
            bs = plan.options.block_size
            changed = result.bytes_written
            size = sizes[pair.label]
            return FileSync(
                pair.label,
                -(-size // bs),
                -(-changed // bs),
                changed,
                result.bytes_written,
                size,
            )
