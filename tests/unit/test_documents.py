"""The ``--output json`` documents: their keys are pinned, so a change to the API's dataclasses
cannot change what scripts parse without a test (and ``SCHEMA``) saying so."""

from __future__ import annotations

import json

from kvm_clone_tui.api.errors import CloneRefused, HostError
from kvm_clone_tui.api.models import (
    NIC,
    VM,
    BackingFile,
    Disk,
    DiskDevice,
    HostInventory,
    HostListing,
    Pool,
    VMState,
)
from kvm_clone_tui.api.options import CloneOptions, SyncOptions
from kvm_clone_tui.api.plans import (
    BitmapDisk,
    ClonePlan,
    Conflict,
    DirectEndpoint,
    FilePair,
    FilePlan,
    PlanWarning,
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
from kvm_clone_tui.cli import documents as d

DISK = Disk(
    "vda", DiskDevice.DISK, "file", "/p/a.qcow2", "qcow2", "virtio", False, 10, 5,
    (BackingFile("/p/base.qcow2", "qcow2"),),
)  # fmt: skip
THE_VM = VM(
    "web", "u-1", VMState.SHUT_OFF, 2, 2048, True, True, "kvm", (DISK,),
    (NIC("52:54:00:00:00:01", "network", "default", "virtio"),), "/nvram", True, ("w",),
)  # fmt: skip
DIRECT = DirectEndpoint("10.0.0.2", 22, "root", "ssh-ed25519 AAAA")
FILE = FilePlan(
    "vda", "disk", "qcow2", "/p/a.qcow2", "/q/b.qcow2", "/q/.p-b", 10, 5, 10, ("/q/c", "qcow2"),
    "vda-export",
)  # fmt: skip
TPM = TpmStatePlan("/s/u-1", "/s/.p-u-2", "/s/u-2", 4096, "ab12")
CLONE_PLAN = ClonePlan(
    "job", "alpha", "beta", THE_VM, "web2", "u-2", "default", "/q", 100, (FILE,), "direct", "r",
    True, "c", 6, "<domain/>", "<domain/>", DIRECT, frozenset({"sdb", "sda"}),
    (Conflict("pool", "no"),), (PlanWarning("vm", "w"),),
    True, False, CloneOptions(new_name="web2"), TPM,
)  # fmt: skip
TRANSFER = TransferResult("vda", "direct", 5, "d1", True, 1.5, 3)
CLONE_RESULT = CloneResult(
    "job", "alpha", "beta", "web", "web2", "u-2", "direct", (TRANSFER,), 5, 1.5, False,
    False, ("w",), "crash-consistent", "old-job", 2,
)  # fmt: skip
SYNC_PLAN = SyncPlan(
    "sjob", "alpha", "beta", THE_VM, "web2", "u-2", (FilePair("vda", "/p/a", "/q/b"),), "hash",
    "why", "<domain/>", (), (PlanWarning("resume", "w"),), SyncOptions(checkpoint=True), True,
    "cp1", "cp2",
    (BitmapDisk("vda", "/p/a"),), ("vda",), (("vda", 10),), (("vda", "qcow2"),), "direct",
    "rr", DIRECT,
)  # fmt: skip
SYNC_RESULT = SyncResult(
    "sjob", "alpha", "beta", "web", "web2", "hash", (FileSync("vda", 4, 1, 64, 70, 256),),
    64, 70, 2.0, "why", "cp2", True, None,
)  # fmt: skip

VM_KEYS = [
    "name", "uuid", "state", "vcpus", "memory_kib", "autostart", "persistent", "domain_type",
    "disks", "nics", "nvram", "tpm", "warnings",
]  # fmt: skip
DISK_KEYS = [
    "target", "device", "source_type", "path", "format", "bus", "readonly", "virtual_size",
    "allocation", "backing_chain",
]  # fmt: skip
DIRECT_KEYS = ["address", "port", "user", "host_key"]


def test_every_document_begins_with_its_schema() -> None:
    assert d.SCHEMA == 1
    assert list(d.document(ok=True, result={})) == ["schema", "ok", "result"]
    failure = d.failure_document(HostError("beta", "down"))
    assert failure == {
        "schema": 1,
        "ok": False,
        "error": {"kind": "host-error", "message": "beta: down"},
    }
    assert d.failure_document(CloneRefused(CLONE_PLAN), "refused")["error"]["kind"] == "refused"


def test_the_listing_keys() -> None:
    inventory = HostInventory(
        "beta", "beta.lab", "9.0.0", (THE_VM,), (Pool("default", "dir", "/q", True, 9, 4, 5),)
    )
    doc = d.listing_document(
        [HostListing("beta", inventory), HostListing("gamma", None, HostError("gamma", "down"))]
    )
    assert list(doc) == ["schema", "hosts"]
    up, down = doc["hosts"]
    assert list(up) == ["host", "ok", "hostname", "libvirt_version", "vms", "pools", "errors"]
    assert list(up["vms"][0]) == VM_KEYS
    assert up["vms"][0]["state"] == "shut-off"
    assert list(up["vms"][0]["disks"][0]) == DISK_KEYS
    assert up["vms"][0]["disks"][0]["backing_chain"] == [
        {"path": "/p/base.qcow2", "format": "qcow2"}
    ]
    assert list(up["vms"][0]["nics"][0]) == ["mac", "type", "source", "model"]
    assert list(up["pools"][0]) == [
        "name", "type", "path", "active", "capacity", "allocation", "available",
    ]  # fmt: skip
    assert down == {
        "host": "gamma",
        "ok": False,
        "error": {"kind": "host-error", "message": "down"},
    }


def test_the_clone_plan_keys() -> None:
    data = d.clone_plan_data(CLONE_PLAN)
    assert list(data) == [
        "job_id", "source_host", "dest_host", "vm", "new_name", "new_uuid", "pool", "pool_path",
        "pool_available", "files", "route", "route_reason", "compress", "compress_reason",
        "required_space", "dest_xml", "direct", "cdroms_present", "conflicts", "warnings",
        "replace_existing", "already_done", "options", "tpm", "ok", "total_bytes",
    ]  # fmt: skip
    assert list(data["files"][0]) == [
        "label", "role", "format", "source_path", "final_path", "staging_path", "size",
        "allocated", "virtual_size", "rebase_to", "live_export",
    ]  # fmt: skip
    assert data["files"][0]["rebase_to"] == ["/q/c", "qcow2"]
    assert list(data["direct"]) == DIRECT_KEYS
    assert data["cdroms_present"] == ["sda", "sdb"]
    assert list(data["options"]) == [
        "new_name", "pool", "force", "idempotent", "start", "preserve_mac", "bandwidth_limit",
        "compress", "transfer", "parallel", "verify", "no_progress_timeout", "checkpoint",
    ]  # fmt: skip
    assert list(data["tpm"]) == ["source_dir", "staging_dir", "final_dir", "size", "digest"]
    assert (data["ok"], data["total_bytes"]) == (False, 5)
    json.dumps(data)  # plain JSON types only


def test_the_clone_result_and_job_keys() -> None:
    data = d.clone_result_data(CLONE_RESULT)
    assert list(data) == [
        "job_id", "source_host", "dest_host", "vm", "new_name", "uuid", "route", "files",
        "bytes_copied", "seconds", "started", "already_done", "warnings", "consistency",
        "resumed_from", "bytes_reused",
    ]  # fmt: skip
    assert list(data["files"][0]) == [
        "label", "route", "bytes_written", "digest", "verified", "seconds", "zero_bytes",
    ]  # fmt: skip
    job = UnfinishedJob("j", "copying", "web", "alpha", "beta", "web2", 1.0, 42, True, None)
    assert d.unfinished_job_data(job) == {
        "job_id": "j",
        "state": "copying",
        "vm": "web",
        "source_host": "alpha",
        "dest_host": "beta",
        "new_name": "web2",
        "created": 1.0,
        "running": True,
        "resumable": False,
        "why_not": "still running in process 42",
    }


def test_the_sync_and_revert_keys() -> None:
    data = d.sync_plan_data(SYNC_PLAN)
    assert list(data) == [
        "job_id", "source_host", "dest_host", "vm", "target", "target_uuid", "pairs", "mode",
        "mode_reason", "conflicts", "warnings", "options", "source_running", "base_checkpoint",
        "new_checkpoint", "bitmap_disks", "all_targets", "virtual_sizes", "dest_formats",
        "route", "route_reason", "direct",
    ]  # fmt: skip
    assert list(data["pairs"][0]) == ["label", "source_path", "dest_path"]
    assert list(data["options"]) == [
        "target_name", "mode", "bandwidth_limit", "verify", "parallel", "block_size",
        "no_progress_timeout", "checkpoint", "transfer",
    ]  # fmt: skip
    assert data["bitmap_disks"] == [{"target": "vda", "path": "/p/a"}]
    assert (data["virtual_sizes"], data["dest_formats"]) == ([["vda", 10]], [["vda", "qcow2"]])
    result = d.sync_result_data(SYNC_RESULT)
    assert list(result) == [
        "job_id", "source_host", "dest_host", "vm", "target", "mode", "files", "changed_bytes",
        "bytes_sent", "seconds", "mode_reason", "checkpoint", "revertible", "consistency",
    ]  # fmt: skip
    assert list(result["files"][0]) == [
        "label", "blocks", "changed_blocks", "changed_bytes", "bytes_sent", "size",
    ]  # fmt: skip
    revert = d.revert_result_data(RevertResult("beta", "web2", "sjob", 64, 0.5))
    assert list(revert) == ["dest_host", "target", "sync_job", "restored_bytes", "seconds"]
