"""The documents ``--output json`` prints, built key by key with a schema version.

Scripts parse these, so each key is written out here rather than derived from a dataclass: a
field added to or renamed in the API's types changes nothing until it is added here too (and
``SCHEMA`` is raised when a key changes meaning or goes away). ``tests/unit/test_documents.py``
pins the keys.
"""

from __future__ import annotations

from typing import Any

from kvm_clone_tui.api.models import (
    NIC,
    VM,
    BackingFile,
    Disk,
    HostInventory,
    HostListing,
    Pool,
)
from kvm_clone_tui.api.options import CloneOptions, SyncOptions
from kvm_clone_tui.api.plans import (
    BitmapDisk,
    ClonePlan,
    DirectEndpoint,
    FilePair,
    FilePlan,
    SyncPlan,
    TpmStatePlan,
)
from kvm_clone_tui.api.results import (
    CloneResult,
    FileSync,
    RevertResult,
    SyncResult,
    TransferResult,
    UnfinishedJob,
)

#: The version of every document's layout; it is the document's first key, ``"schema"``.
SCHEMA = 1

Data = dict[str, Any]


def document(**body: Any) -> Data:
    """A top-level document: ``{"schema": SCHEMA, ...body}``."""
    return {"schema": SCHEMA, **body}


def error_data(exc: BaseException, kind: str | None = None) -> Data:
    """An error as scripts see it: its machine-readable kind and its message."""
    return {"kind": kind or getattr(exc, "kind", "error"), "message": str(exc)}


def failure_document(exc: BaseException, kind: str | None = None) -> Data:
    """What a failed command prints: ``{"schema", "ok": false, "error"}``."""
    return document(ok=False, error=error_data(exc, kind))


# --- inventories ------------------------------------------------------------------------------


def backing_data(backing: BackingFile) -> Data:
    return {"path": backing.path, "format": backing.format}


def disk_data(disk: Disk) -> Data:
    return {
        "target": disk.target,
        "device": disk.device.value,
        "source_type": disk.source_type,
        "path": disk.path,
        "format": disk.format,
        "bus": disk.bus,
        "readonly": disk.readonly,
        "virtual_size": disk.virtual_size,
        "allocation": disk.allocation,
        "backing_chain": [backing_data(b) for b in disk.backing_chain],
    }


def nic_data(nic: NIC) -> Data:
    return {"mac": nic.mac, "type": nic.type, "source": nic.source, "model": nic.model}


def vm_data(vm: VM) -> Data:
    return {
        "name": vm.name,
        "uuid": vm.uuid,
        "state": vm.state.value,
        "vcpus": vm.vcpus,
        "memory_kib": vm.memory_kib,
        "autostart": vm.autostart,
        "persistent": vm.persistent,
        "domain_type": vm.domain_type,
        "disks": [disk_data(d) for d in vm.disks],
        "nics": [nic_data(n) for n in vm.nics],
        "nvram": vm.nvram,
        "tpm": vm.tpm,
        "warnings": list(vm.warnings),
    }


def pool_data(pool: Pool) -> Data:
    return {
        "name": pool.name,
        "type": pool.type,
        "path": pool.path,
        "active": pool.active,
        "capacity": pool.capacity,
        "allocation": pool.allocation,
        "available": pool.available,
    }


def inventory_data(inventory: HostInventory) -> Data:
    """A host's inventory (without ``host``: the listing entry names it)."""
    return {
        "hostname": inventory.hostname,
        "libvirt_version": inventory.libvirt_version,
        "vms": [vm_data(v) for v in inventory.vms],
        "pools": [pool_data(p) for p in inventory.pools],
        "errors": list(inventory.errors),
    }


def listing_document(listings: list[HostListing]) -> Data:
    """``list``: one entry per host, with ``ok`` and ``error`` or the inventory."""
    hosts = []
    for listing in listings:
        entry: Data = {"host": listing.host, "ok": listing.inventory is not None}
        if listing.error is not None:
            entry["error"] = {
                "kind": getattr(listing.error, "kind", "error"),
                "message": getattr(listing.error, "message", str(listing.error)),
            }
        if listing.inventory is not None:
            entry.update(inventory_data(listing.inventory))
        hosts.append(entry)
    return document(hosts=hosts)


# --- clones -----------------------------------------------------------------------------------


def direct_data(direct: DirectEndpoint | None) -> Data | None:
    if direct is None:
        return None
    return {
        "address": direct.address,
        "port": direct.port,
        "user": direct.user,
        "host_key": direct.host_key,
    }


def clone_options_data(o: CloneOptions) -> Data:
    return {
        "new_name": o.new_name,
        "pool": o.pool,
        "force": o.force,
        "idempotent": o.idempotent,
        "start": o.start,
        "preserve_mac": o.preserve_mac,
        "bandwidth_limit": o.bandwidth_limit,
        "compress": o.compress,
        "transfer": o.transfer,
        "parallel": o.parallel,
        "verify": o.verify,
        "no_progress_timeout": o.no_progress_timeout,
        "checkpoint": o.checkpoint,
    }


def file_plan_data(f: FilePlan) -> Data:
    return {
        "label": f.label,
        "role": f.role,
        "format": f.format,
        "source_path": f.source_path,
        "final_path": f.final_path,
        "staging_path": f.staging_path,
        "size": f.size,
        "allocated": f.allocated,
        "virtual_size": f.virtual_size,
        "rebase_to": list(f.rebase_to) if f.rebase_to is not None else None,
        "live_export": f.live_export,
    }


def tpm_plan_data(tpm: TpmStatePlan | None) -> Data | None:
    if tpm is None:
        return None
    return {
        "source_dir": tpm.source_dir,
        "staging_dir": tpm.staging_dir,
        "final_dir": tpm.final_dir,
        "size": tpm.size,
        "digest": tpm.digest,
    }


def clone_plan_data(plan: ClonePlan) -> Data:
    """A clone plan (``--dry-run``, or a refusal): everything but the source's XML."""
    return {
        "job_id": plan.job_id,
        "source_host": plan.source_host,
        "dest_host": plan.dest_host,
        "vm": vm_data(plan.vm),
        "new_name": plan.new_name,
        "new_uuid": plan.new_uuid,
        "pool": plan.pool,
        "pool_path": plan.pool_path,
        "pool_available": plan.pool_available,
        "files": [file_plan_data(f) for f in plan.files],
        "route": plan.route,
        "route_reason": plan.route_reason,
        "compress": plan.compress,
        "compress_reason": plan.compress_reason,
        "required_space": plan.required_space,
        "dest_xml": plan.dest_xml,
        "direct": direct_data(plan.direct),
        "cdroms_present": sorted(plan.cdroms_present),
        "conflicts": [c.message for c in plan.conflicts],
        "warnings": [w.message for w in plan.warnings],
        "replace_existing": plan.replace_existing,
        "already_done": plan.already_done,
        "options": clone_options_data(plan.options),
        "tpm": tpm_plan_data(plan.tpm),
        "ok": plan.ok,
        "total_bytes": plan.total_bytes,
    }


def transfer_data(t: TransferResult) -> Data:
    return {
        "label": t.label,
        "route": t.route,
        "bytes_written": t.bytes_written,
        "digest": t.digest,
        "verified": t.verified,
        "seconds": t.seconds,
        "zero_bytes": t.zero_bytes,
    }


def clone_result_data(r: CloneResult) -> Data:
    return {
        "job_id": r.job_id,
        "source_host": r.source_host,
        "dest_host": r.dest_host,
        "vm": r.vm,
        "new_name": r.new_name,
        "uuid": r.uuid,
        "route": r.route,
        "files": [transfer_data(f) for f in r.files],
        "bytes_copied": r.bytes_copied,
        "seconds": r.seconds,
        "started": r.started,
        "already_done": r.already_done,
        "warnings": list(r.warnings),
        "consistency": r.consistency,
        "resumed_from": r.resumed_from,
        "bytes_reused": r.bytes_reused,
    }


def unfinished_job_data(job: UnfinishedJob) -> Data:
    """A job as ``resume --list`` shows it."""
    return {
        "job_id": job.job_id,
        "state": job.state,
        "vm": job.vm,
        "source_host": job.source_host,
        "dest_host": job.dest_host,
        "new_name": job.new_name,
        "created": job.created,
        "running": job.running,
        "resumable": job.blocker is None and not job.running,
        "why_not": f"still running in process {job.owner_pid}" if job.running else job.blocker,
    }


# --- syncs and reverts ------------------------------------------------------------------------


def sync_options_data(o: SyncOptions) -> Data:
    return {
        "target_name": o.target_name,
        "mode": o.mode,
        "bandwidth_limit": o.bandwidth_limit,
        "verify": o.verify,
        "parallel": o.parallel,
        "block_size": o.block_size,
        "no_progress_timeout": o.no_progress_timeout,
        "checkpoint": o.checkpoint,
        "transfer": o.transfer,
    }


def pair_data(p: FilePair) -> Data:
    return {"label": p.label, "source_path": p.source_path, "dest_path": p.dest_path}


def bitmap_disk_data(d: BitmapDisk) -> Data:
    return {"target": d.target, "path": d.path}


def sync_plan_data(plan: SyncPlan) -> Data:
    """A sync plan (``--dry-run``, or a refusal): everything but the clone's XML."""
    return {
        "job_id": plan.job_id,
        "source_host": plan.source_host,
        "dest_host": plan.dest_host,
        "vm": vm_data(plan.vm),
        "target": plan.target,
        "target_uuid": plan.target_uuid,
        "pairs": [pair_data(p) for p in plan.pairs],
        "mode": plan.mode,
        "mode_reason": plan.mode_reason,
        "conflicts": [c.message for c in plan.conflicts],
        "warnings": [w.message for w in plan.warnings],
        "options": sync_options_data(plan.options),
        "source_running": plan.source_running,
        "base_checkpoint": plan.base_checkpoint,
        "new_checkpoint": plan.new_checkpoint,
        "bitmap_disks": [bitmap_disk_data(d) for d in plan.bitmap_disks],
        "all_targets": list(plan.all_targets),
        "virtual_sizes": [[t, n] for t, n in plan.virtual_sizes],
        "dest_formats": [[t, f] for t, f in plan.dest_formats],
        "route": plan.route,
        "route_reason": plan.route_reason,
        "direct": direct_data(plan.direct),
    }


def file_sync_data(f: FileSync) -> Data:
    return {
        "label": f.label,
        "blocks": f.blocks,
        "changed_blocks": f.changed_blocks,
        "changed_bytes": f.changed_bytes,
        "bytes_sent": f.bytes_sent,
        "size": f.size,
    }


def sync_result_data(r: SyncResult) -> Data:
    return {
        "job_id": r.job_id,
        "source_host": r.source_host,
        "dest_host": r.dest_host,
        "vm": r.vm,
        "target": r.target,
        "mode": r.mode,
        "files": [file_sync_data(f) for f in r.files],
        "changed_bytes": r.changed_bytes,
        "bytes_sent": r.bytes_sent,
        "seconds": r.seconds,
        "mode_reason": r.mode_reason,
        "checkpoint": r.checkpoint,
        "revertible": r.revertible,
        "consistency": r.consistency,
    }


def revert_result_data(r: RevertResult) -> Data:
    return {
        "dest_host": r.dest_host,
        "target": r.target,
        "sync_job": r.sync_job,
        "restored_bytes": r.restored_bytes,
        "seconds": r.seconds,
    }
