"""The facts a clone plan is decided on, and the one place that asks the hosts for them.

:func:`gather_clone_facts` makes every host call of planning (inventories, the pool, the
source's definition and files, the destination's tools, space, limits and CPU, the TPM state,
the route's prerequisites); :func:`~kvm_clone_tui.engine.plan_rules.decide` then decides from
these values alone, so each refusal rule is unit-tested without hosts and the TUI's fakes feed
fixed facts to the real rules.
"""

from __future__ import annotations

import asyncio
import posixpath
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from kvm_clone_tui.api.errors import HostError
from kvm_clone_tui.api.models import VM, DiskDevice, VMState
from kvm_clone_tui.api.options import CloneOptions
from kvm_clone_tui.api.plans import DirectEndpoint
from kvm_clone_tui.api.validation import (
    ValidationError,
    parse_host_spec,
    validate_remote_path,
    validate_vm_name,
)
from kvm_clone_tui.engine.cpu_compat import GuestCpu, HostView, guest_cpu
from kvm_clone_tui.engine.domain_rewrite import read_clone_metadata
from kvm_clone_tui.engine.host_port import Host, HostLimits, Hosts, PoolInfo
from kvm_clone_tui.engine.journal import new_job_id
from kvm_clone_tui.engine.remote_agent import RemoteAgent
from kvm_clone_tui.engine.tpm_state import (
    TpmDevice,
    TpmStateError,
    read_summary,
    state_dir,
    tpm_devices,
)

_EXISTING = 'for p in "$@"; do if [ -e "$p" ] || [ -L "$p" ]; then printf "%s\\n" "$p"; fi; done'


@dataclass(frozen=True)
class SourceFile:
    """A file of the source VM to copy (a disk, a layer of its backing chain, the NVRAM)."""

    label: str
    role: str  # disk | backing | nvram
    path: str
    format: str
    virtual_size: int | None
    final_name: str  # its name in the destination pool


@dataclass(frozen=True)
class RouteFacts:
    """What decides the data path: each prerequisite of a direct copy, asked in turn until one
    fails (None: not asked)."""

    agent_forwarding: bool
    agent_has_keys: bool | None = None
    source_has_ssh: bool | None = None
    endpoint: DirectEndpoint | None = None  # None: the destination's host key is unknown


@dataclass(frozen=True)
class TpmFacts:
    """The source's emulated TPMs and what the hosts say about their state (None: not asked)."""

    devices: tuple[TpmDevice, ...]
    dest_has_swtpm: bool | None = None
    state: dict[str, Any] | None = None  # the source agent's summary: exists, bytes, digest
    read_error: str | None = None  # reading the state failed (the agent's message)


@dataclass(frozen=True)
class CloneFacts:
    """Everything the hosts said that a clone plan depends on."""

    source: str
    dest: str
    vm: VM
    new_name: str
    job_id: str
    new_uuid: str
    pool: str
    pool_info: PoolInfo
    source_xml: str
    guest_cpu: GuestCpu
    source_cpu: HostView
    dest_cpu: HostView
    limits: HostLimits
    route: RouteFacts
    existing: VM | None = None  # the destination's VM of the clone's name
    existing_is_clone: bool = False  # ... is a clone of this VM (asked with --idempotent only)
    stats: tuple[dict[str, Any], ...] | None = None  # the agent's resolve, per source file
    extents: dict[str, dict[str, Any]] = field(default_factory=dict)  # real path -> extents
    taken: frozenset[str] = frozenset()  # destination paths of the files that already exist
    cdroms_present: frozenset[str] = frozenset()
    dest_probe: dict[str, Any] = field(default_factory=dict)  # {} when the pool is unusable
    source_zstd: bool | None = None  # None: not asked (--compress off)
    dest_peer: str = ""  # the address the destination's SSH connection reached
    tpm: TpmFacts | None = None

    @property
    def pool_path(self) -> str:
        return self.pool_info.path or "/nonexistent"

    @property
    def live(self) -> bool:
        return self.vm.state in (VMState.RUNNING, VMState.PAUSED, VMState.BLOCKED)


def _extension(fmt: str) -> str:
    return {"qcow2": "qcow2", "raw": "img"}.get(fmt, fmt)


def source_files(vm: VM, new_name: str, live: bool) -> list[SourceFile]:
    """The files a clone copies, file-backed disks first with their chains (none when live)."""
    sources: list[SourceFile] = []
    for disk in vm.disks:
        if disk.device is not DiskDevice.DISK or disk.source_type != "file" or disk.path is None:
            continue
        fmt = disk.format or "raw"
        name = f"{new_name}-{disk.target}.{_extension(fmt)}"
        sources.append(SourceFile(disk.target, "disk", disk.path, fmt, disk.virtual_size, name))
        for i, layer in enumerate(() if live else disk.backing_chain, start=1):
            lfmt = layer.format or "raw"
            name = f"{new_name}-{disk.target}-backing{i}.{_extension(lfmt)}"
            sources.append(
                SourceFile(f"{disk.target}.backing{i}", "backing", layer.path, lfmt, None, name)
            )
    if vm.nvram:
        sources.append(SourceFile("nvram", "nvram", vm.nvram, "raw", None, f"{new_name}-nvram.fd"))
    return sources


def unsafe_source_path(sources: list[SourceFile]) -> str | None:
    """Why the first unsafe source path is refused (None: all are safe)."""
    for source in sources:
        try:
            validate_remote_path(source.path)
        except ValidationError as exc:
            return str(exc)
    return None


async def _agent_has_keys() -> bool:
    """True when a local SSH agent answers with at least one key."""
    try:
        async with asyncssh.connect_agent() as agent:
            keys = await agent.get_keys()
            return len(keys) > 0
    except (OSError, asyncssh.Error, ValueError):
        return False


def direct_endpoint(hosts: Hosts, dst: Host) -> DirectEndpoint | None:
    """How the source reaches the destination's sshd (None: its host key is unknown)."""
    key = dst.host_key_line()
    if key is None:
        return None
    reach = hosts.config.host(dst.name).reach_address
    user = dst.login_user()
    address, port = dst.peer() or (dst.address(), 22)
    if reach:
        spec = parse_host_spec(reach)
        address, port, user = spec.host, spec.port or 22, spec.user or user
    return DirectEndpoint(address=address, port=port, user=user, host_key=key)


async def gather_route_facts(hosts: Hosts, transfer: str, src: Host, dst: Host) -> RouteFacts:
    """Ask for each prerequisite of a direct copy in turn, until one fails."""
    facts = RouteFacts(agent_forwarding=hosts.agent_forwarding)
    if transfer == "relay" or not facts.agent_forwarding:
        return facts
    if not await _agent_has_keys():
        return RouteFacts(True, agent_has_keys=False)
    has_ssh = (await src.run(["sh", "-c", "command -v ssh"], check=False)).exit_status == 0
    if not has_ssh:
        return RouteFacts(True, agent_has_keys=True, source_has_ssh=False)
    return RouteFacts(True, True, True, direct_endpoint(hosts, dst))


async def gather_tpm_facts(
    src: Host, dst: Host, source_xml: str, source_uuid: str
) -> TpmFacts | None:
    """The source's emulated TPMs; for one, whether the destination runs swtpm and the state."""
    emulated = tuple(t for t in tpm_devices(source_xml) if t.backend == "emulator")
    if len(emulated) != 1:
        return TpmFacts(emulated) if emulated else None
    has_swtpm = await dst.run(
        ["sh", "-c", "command -v swtpm && command -v swtpm_setup"], check=False
    )
    try:
        summary = await read_summary(src, state_dir(source_uuid))
    except TpmStateError as exc:
        return TpmFacts(emulated, has_swtpm.exit_status == 0, read_error=exc.message)
    return TpmFacts(emulated, has_swtpm.exit_status == 0, state=summary)


async def _file_facts(
    agent: RemoteAgent, sources: list[SourceFile]
) -> tuple[tuple[dict[str, Any], ...] | None, dict[str, dict[str, Any]]]:
    """The agent's resolve of each source file, and the extents of those that are files."""
    if not sources or unsafe_source_path(sources) is not None:
        return None, {}
    stats = tuple(await agent.resolve([s.path for s in sources]))
    extents: dict[str, dict[str, Any]] = {}
    for st in stats:
        if "error" not in st and st["kind"] == "file" and st["real"] not in extents:
            extents[st["real"]] = await agent.extents(st["real"])
    return stats, extents


async def _existing(dst: Host, paths: list[str]) -> frozenset[str]:
    """Which of ``paths`` exist on ``dst`` (dangling symlinks too)."""
    if not paths:
        return frozenset()
    found = await dst.run(["sh", "-c", _EXISTING, "sh", *paths], check=False)
    return frozenset(found.stdout.split("\n")) & frozenset(paths)


async def gather_clone_facts(
    hosts: Hosts, source: str, dest: str, vm_name: str, options: CloneOptions
) -> CloneFacts:
    """Ask both hosts everything planning needs (a missing VM is raised, not decided)."""
    new_name = validate_vm_name(options.new_name or vm_name)
    validate_vm_name(vm_name)
    src, dst = await asyncio.gather(hosts.host(source), hosts.host(dest))
    src_inv, dst_inv = await asyncio.gather(hosts.inventory(source), hosts.inventory(dest))
    vm = src_inv.vm(vm_name)
    if vm is None:
        raise HostError(source, f"no VM named {vm_name!r} (kvm-clone list {source})")
    pool = options.pool or hosts.config.pool_for(dest)
    pool_info = await dst.pool(pool)
    source_xml = await source_definition(src, vm_name)
    existing = dst_inv.vm(new_name)
    is_clone = False
    if existing is not None and options.idempotent:
        meta = read_clone_metadata(await dst.domain_xml(new_name))
        is_clone = meta.get("source-uuid") == vm.uuid and meta.get("source-host") == source
    live = vm.state in (VMState.RUNNING, VMState.PAUSED, VMState.BLOCKED)
    src_agent, dst_agent = RemoteAgent(src), RemoteAgent(dst)
    sources = source_files(vm, new_name, live)
    stats, extents = await _file_facts(src_agent, sources)
    tpm = await gather_tpm_facts(src, dst, source_xml, vm.uuid)
    cdroms = [d.path for d in vm.disks if d.device is not DiskDevice.DISK and d.path]
    pool_path = pool_info.path or "/nonexistent"
    finals = [posixpath.join(pool_path, s.final_name) for s in sources]
    cdroms_present, taken = await asyncio.gather(_existing(dst, cdroms), _existing(dst, finals))
    probe = await dst_agent.probe([pool_path]) if not pool_info.problem else {}
    limits = await dst.limits()
    guest = guest_cpu(source_xml)
    source_cpu, dest_cpu = await asyncio.gather(src.cpu_view(guest), dst.cpu_view(guest))
    route = await gather_route_facts(hosts, options.transfer, src, dst)
    source_zstd = None
    if options.compress != "off":
        source_zstd = bool((await src_agent.probe()).get("zstd"))
    return CloneFacts(
        source=source,
        dest=dest,
        vm=vm,
        new_name=new_name,
        job_id=new_job_id(),
        new_uuid=str(uuid.uuid4()),
        pool=pool,
        pool_info=pool_info,
        source_xml=source_xml,
        guest_cpu=guest,
        source_cpu=source_cpu,
        dest_cpu=dest_cpu,
        limits=limits,
        route=route,
        existing=existing,
        existing_is_clone=is_clone,
        stats=stats,
        extents=extents,
        taken=taken,
        cdroms_present=cdroms_present,
        dest_probe=dict(probe),
        source_zstd=source_zstd,
        dest_peer=(dst.peer() or ("", 0))[0],
        tpm=tpm,
    )


async def source_definition(src: Host, vm_name: str) -> str:
    """The source's persistent definition, with secrets (the clone keeps its passwords)."""
    return await src.domain_xml(vm_name, inactive=True, secure=True)
