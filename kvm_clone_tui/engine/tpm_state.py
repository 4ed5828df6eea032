"""The emulated TPM's state: planned, staged, committed and rolled back with a clone.

libvirt keeps the state of a VM's emulated TPM (swtpm) in ``/var/lib/libvirt/swtpm/<uuid>/``
on its host: a directory named after the domain's UUID, a few KiB (``tpm2/tpm2-00.permall``).
A clone gets a copy under its own UUID. Like disks, it is staged first under a partial name
(``/var/lib/libvirt/swtpm/.kvmclone-partial-<job>-<new uuid>``), checked against the source's
digest, renamed to its final name at commit, and removed on rollback (the journal's
``tpm_state``). A VM that never started has no state: libvirt creates it at the first start.

That directory is libvirt's, not a storage pool: the state cannot be anywhere else (libvirt
9 has no setting for where a TPM keeps it), so this is the one place outside the destination
pool where a clone writes. Every path there is ``/var/lib/libvirt/swtpm/<one name>``, the name
a UUID or a ``.kvmclone-partial-`` name (checked on the host again), written without following
symlinks, and removed only as a whole directory of that form.

The host side is the agent's ``tpm`` module (``tpm-pack``, ``tpm-unpack``, ``tpm-commit``,
``tpm-remove``: kvm_clone_tui/agent/host/tpm.py), called through ``RemoteAgent``.
"""

from __future__ import annotations

import posixpath
import uuid as uuid_module
import xml.etree.ElementTree as ET
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from kvm_clone_tui.agent.host.tpm import MAX_STATE_BYTES as TPM_MAX_STATE_BYTES
from kvm_clone_tui.agent.host.tpm import ROOT as TPM_ROOT
from kvm_clone_tui.agent.protocol import AgentFailure
from kvm_clone_tui.api.errors import HostError
from kvm_clone_tui.api.plans import TpmStatePlan
from kvm_clone_tui.engine.host_port import Host
from kvm_clone_tui.engine.journal import STAGING_PREFIX, Journal, JournalRecord, StagedFile
from kvm_clone_tui.engine.remote_agent import RemoteAgent

SWTPM_ROOT = TPM_ROOT
#: TPM state is a few KiB; anything much larger is not what this module expects to copy.
MAX_STATE_BYTES = TPM_MAX_STATE_BYTES

T = TypeVar("T")


class TpmStateError(HostError):
    """Reading, writing or checking TPM state failed on a host."""


def state_dir(vm_uuid: str) -> str:
    """libvirt's TPM state directory of the domain ``vm_uuid`` on its host."""
    return posixpath.join(SWTPM_ROOT, str(uuid_module.UUID(vm_uuid)))


def staging_dir(job_id: str, new_uuid: str) -> str:
    """Where a job stages the clone's TPM state before commit."""
    return posixpath.join(SWTPM_ROOT, f"{STAGING_PREFIX}{job_id}-{uuid_module.UUID(new_uuid)}")


@dataclass(frozen=True)
class TpmDevice:
    """What a domain's ``<tpm>`` says (pure parse of its XML)."""

    model: str
    backend: str  # emulator | passthrough | external | ...
    version: str | None
    encrypted: bool  # <encryption secret=...>: the state is encrypted with a libvirt secret
    persistent_state: bool


def tpm_devices(domain_xml: str) -> list[TpmDevice]:
    """The TPMs of a domain definition (already checked by the planner's parse)."""
    root = ET.fromstring(domain_xml)
    out = []
    for tpm in root.findall("devices/tpm"):
        backend = tpm.find("backend")
        out.append(
            TpmDevice(
                model=tpm.get("model", "tpm-tis"),
                backend=(backend.get("type") if backend is not None else None) or "none",
                version=backend.get("version") if backend is not None else None,
                encrypted=backend is not None and backend.find("encryption") is not None,
                persistent_state=backend is not None and backend.get("persistent_state") == "yes",
            )
        )
    return out


async def _tpm(host: Host, call: Awaitable[T]) -> T:
    """Await a ``tpm-*`` call of the host's agent; its failures as TpmStateError."""
    try:
        return await call
    except AgentFailure as exc:
        raise TpmStateError(host.name, f"TPM state: {exc}") from None


async def read_summary(src: Host, source_dir: str) -> dict[str, Any]:
    """The source agent's summary of a TPM state directory (exists, bytes, digest)."""
    summary: dict[str, Any] = await _tpm(src, RemoteAgent(src).tpm_pack(source_dir, summary=True))
    return summary


async def stage_tpm_state(src: Host, dst: Host, plan: TpmStatePlan, journal: Journal) -> str:
    """Copy the state into its staging directory (journalled first); its verified digest."""
    packed = await _tpm(src, RemoteAgent(src).tpm_pack(plan.source_dir))
    if not packed["exists"]:
        raise TpmStateError(
            src.name, f"the TPM state {plan.source_dir} vanished since the clone was planned"
        )
    journal.record.tpm_state.append(StagedFile(plan.staging_dir, plan.final_dir))
    journal.save()
    written = await _tpm(dst, RemoteAgent(dst).tpm_unpack(plan.staging_dir, packed))
    if written["digest"] != packed["digest"]:
        raise TpmStateError(
            dst.name,
            f"the TPM state written to {plan.staging_dir} differs from {plan.source_dir} on "
            f"{src.name}",
        )
    return str(packed["digest"])


async def commit_tpm_state(dst: Host, journal: Journal) -> None:
    """Rename staged TPM state to its final directory (before the domain is defined)."""
    for staged in journal.record.tpm_state:
        if staged.committed:
            continue
        await _tpm(dst, RemoteAgent(dst).tpm_commit(staged.staging, staged.final))
        staged.committed = True
        journal.save()


async def rollback_tpm_state(dst: Host, record: JournalRecord) -> list[str]:
    """Remove the TPM state a job staged or committed; the problems met (empty: all gone)."""
    problems = []
    for staged in record.tpm_state:
        # The final directory only once this job put it there (never another's state).
        paths = [staged.staging, staged.final] if staged.committed else [staged.staging]
        try:
            await _tpm(dst, RemoteAgent(dst).tpm_remove(paths))
            staged.committed = False
        except Exception as exc:
            problems.append(f"TPM state {staged.final}: {exc}")
    return problems


async def drop_replaced_tpm_state(dst: Host, replaced_xml: str | None) -> None:
    """After commit: remove the TPM state of the VM that ``--force`` replaced, if it had one.

    It is kept until then (undefined with ``VIR_DOMAIN_UNDEFINE_KEEP_TPM``) so that a rollback
    can restore the replaced VM with its TPM.
    """
    if not replaced_xml:
        return
    if not any(t.backend == "emulator" for t in tpm_devices(replaced_xml)):
        return
    old_uuid = (ET.fromstring(replaced_xml).findtext("uuid") or "").strip()
    if old_uuid:
        await _tpm(dst, RemoteAgent(dst).tpm_remove([state_dir(old_uuid)]))
