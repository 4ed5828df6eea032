"""The clone plan: everything decided and checked before a single byte is copied.

It is also what ``--dry-run`` prints and what the TUI shows before it starts: the disks with
their sizes and paths, the route the data takes and why, the space check, conflicts (which
refuse the clone) and warnings.
"""

from __future__ import annotations

import asyncio
import ipaddress
import posixpath
import uuid

import asyncssh

from kvm_clone_tui.api.errors import HostError
from kvm_clone_tui.api.models import VM, DiskDevice, VMState
from kvm_clone_tui.api.options import CloneOptions
from kvm_clone_tui.api.plans import ClonePlan, DirectEndpoint, FilePlan
from kvm_clone_tui.api.units import format_bytes
from kvm_clone_tui.api.validation import (
    ValidationError,
    parse_host_spec,
    validate_remote_path,
    validate_vm_name,
)
from kvm_clone_tui.engine.cpu_compat import check_cpu
from kvm_clone_tui.engine.domain_rewrite import (
    DiskMapping,
    RewriteError,
    RewriteOptions,
    RewriteResult,
    read_clone_metadata,
    rewrite_domain,
)
from kvm_clone_tui.engine.host_port import Host, Hosts
from kvm_clone_tui.engine.journal import STAGING_PREFIX, new_job_id
from kvm_clone_tui.engine.remote_agent import RemoteAgent
from kvm_clone_tui.engine.tpm_state import plan_tpm_state

SPACE_MARGIN_MIN = 64 << 20
SPACE_MARGIN_FRACTION = 0.02

_EXISTING = 'for p in "$@"; do if [ -e "$p" ] || [ -L "$p" ]; then printf "%s\\n" "$p"; fi; done'


def _extension(fmt: str) -> str:
    return {"qcow2": "qcow2", "raw": "img"}.get(fmt, fmt)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


async def _agent_has_keys() -> bool:
    """True when a local SSH agent answers with at least one key."""
    try:
        async with asyncssh.connect_agent() as agent:
            keys = await agent.get_keys()
            return len(keys) > 0
    except (OSError, asyncssh.Error, ValueError):
        return False


async def _direct_endpoint(hosts: Hosts, dst: Host) -> DirectEndpoint | None:
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


async def choose_route(
    hosts: Hosts, transfer: str, src: Host, dst: Host, conflicts: list[str]
) -> tuple[str, str, DirectEndpoint | None]:
    """(route, why, endpoint) for data from ``src`` to ``dst``; ``transfer``: auto|direct|relay
    (an impossible ``direct`` adds a conflict)."""
    if transfer == "relay":
        return "relay", "requested with --transfer relay", None
    problem = None
    if not hosts.agent_forwarding:
        problem = "ssh.agent_forwarding is off"
    elif not await _agent_has_keys():
        problem = (
            "no SSH agent with keys to forward (start ssh-agent and ssh-add your key "
            "for direct host-to-host copies)"
        )
    elif (await src.run(["sh", "-c", "command -v ssh"], check=False)).exit_status != 0:
        problem = f"{src.name} has no ssh client"
    endpoint = None if problem else await _direct_endpoint(hosts, dst)
    if endpoint is None and problem is None:
        problem = "the destination's host key is unknown"
    if problem is None:
        assert endpoint is not None
        return (
            "direct",
            f"{src.name} sends straight to {endpoint.address}:{endpoint.port}",
            endpoint,
        )
    if transfer == "direct":
        conflicts.append(f"--transfer direct is impossible: {problem}")
    return "relay", f"through this machine: {problem}", None


async def _dest_limits(dst: Host, vm: VM) -> list[str]:
    limits = await dst.limits()
    memory_mib, cpus, caps = limits.memory_mib, limits.cpus, limits.capabilities
    warnings = []
    if vm.memory_kib // 1024 > memory_mib:
        warnings.append(
            f"the VM has {format_bytes(vm.memory_kib * 1024)} of memory, the "
            f"destination only {format_bytes(memory_mib << 20)}"
        )
    if vm.vcpus > cpus:
        warnings.append(f"the VM has {vm.vcpus} vCPUs, the destination {cpus} CPUs")
    if vm.domain_type == "kvm" and "type='kvm'" not in caps and 'type="kvm"' not in caps:
        warnings.append(
            "the destination offers no KVM acceleration: the clone will not start "
            "until its domain type is changed to qemu"
        )
    return warnings


async def build_plan(
    hosts: Hosts, source: str, dest: str, vm_name: str, options: CloneOptions
) -> ClonePlan:
    """Check everything and decide every path; conflicts are collected, not raised."""
    new_name = validate_vm_name(options.new_name or vm_name)
    validate_vm_name(vm_name)
    src, dst = await asyncio.gather(hosts.host(source), hosts.host(dest))
    src_inv, dst_inv = await asyncio.gather(hosts.inventory(source), hosts.inventory(dest))
    vm = src_inv.vm(vm_name)
    if vm is None:
        raise HostError(source, f"no VM named {vm_name!r} (kvm-clone list {source})")
    conflicts: list[str] = []
    warnings: list[str] = list(vm.warnings)
    job_id = new_job_id()
    pool = options.pool or hosts.config.pool_for(dest)
    found = await dst.pool(pool)
    pool_path, available, problem = found.path, found.available, found.problem
    if problem:
        conflicts.append(problem)
    pool_path = pool_path or "/nonexistent"
    source_xml = await src.domain_xml(vm_name, inactive=True, secure=True)

    live = vm.state in (VMState.RUNNING, VMState.PAUSED, VMState.BLOCKED)
    if live:
        warnings.append(
            f"the source VM is {vm.state.value}: live clone of one point in time through "
            "libvirt's backup API; application-consistent if its guest agent freezes the "
            "filesystems, else crash-consistent (like a power cut); backing chains are flattened"
        )
    elif vm.state is not VMState.SHUT_OFF:
        conflicts.append(f"the source VM is {vm.state.value}: start or shut it down first")
    if source == dest and new_name == vm_name:
        conflicts.append("cloning a VM onto its own host needs --new-name")

    replace_existing = already_done = False
    existing = dst_inv.vm(new_name)
    if existing is not None:
        if options.idempotent and _is_clone_of(await dst.domain_xml(new_name), source, vm.uuid):
            already_done = True
        elif options.force:
            if existing.state is not VMState.SHUT_OFF:
                conflicts.append(
                    f"{new_name} on {dest} is {existing.state.value}: "
                    "shut it down before replacing it with --force"
                )
            replace_existing = True
        else:
            conflicts.append(
                f"a VM named {new_name!r} already exists on {dest}: choose "
                "--new-name, or --force to replace it once the copy is verified"
            )

    src_agent, dst_agent = RemoteAgent(src), RemoteAgent(dst)
    files = await _file_plans(
        src, src_agent, vm, new_name, job_id, pool_path, conflicts, warnings, live
    )
    new_uuid = str(uuid.uuid4())
    tpm = await plan_tpm_state(
        src, dst, source_xml, vm.uuid, new_uuid, job_id, live, conflicts, warnings
    )
    cdroms_present: frozenset[str] = frozenset()
    cdroms = [d.path for d in vm.disks if d.device is not DiskDevice.DISK and d.path]
    if cdroms:
        present = await dst.run(["sh", "-c", _EXISTING, "sh", *cdroms], check=False)
        cdroms_present = frozenset(present.stdout.split("\n")) & frozenset(cdroms)

    if files and not conflicts and not already_done:
        existing_paths = await dst.run(
            ["sh", "-c", _EXISTING, "sh", *[f.final_path for f in files]], check=False
        )
        taken = [p for p in existing_paths.stdout.splitlines() if p]
        own = {d.path for d in (existing.disks if existing and replace_existing else ())}
        for path in taken:
            if path not in own:
                conflicts.append(
                    f"{path} already exists on {dest}: it belongs to another VM "
                    "or an earlier copy; choose --new-name or remove it"
                )

    probe = await dst_agent.probe([pool_path]) if not problem else {}
    if any(f.raw_staging_path for f in files) and not probe.get("qemu_img"):
        conflicts.append(
            f"{dest} needs qemu-img to turn the live copy back into its format "
            "(apt-get install qemu-utils)"
        )
    if any(f.rebase_to for f in files) and not probe.get("qemu_img"):
        conflicts.append(
            f"{dest} needs qemu-img to re-point the copied backing chain "
            "(apt-get install qemu-utils)"
        )
    # A live copy of a non-raw disk exists twice for a moment: raw, then converted.
    total = sum(f.allocated * (2 if f.raw_staging_path else 1) for f in files)
    required = total + max(SPACE_MARGIN_MIN, int(total * SPACE_MARGIN_FRACTION))
    if not problem and required > available and not already_done:
        conflicts.append(
            f"not enough space in pool {pool} on {dest}: needs "
            f"{format_bytes(required)} (data plus margin), has "
            f"{format_bytes(available)}"
        )
    warnings += await _dest_limits(dst, vm)
    cpu = await check_cpu(src, dst, source_xml, vm_name)
    conflicts += cpu.conflicts
    warnings += cpu.warnings
    dest_xml = ""
    if not conflicts:
        try:
            rewritten = destination_xml(
                source_xml, files, source, vm, new_name, new_uuid, job_id, options, cdroms_present
            )
            dest_xml = rewritten.xml
            warnings += rewritten.warnings
        except RewriteError as exc:
            conflicts.append(f"the domain definition cannot be cloned: {exc}")

    route, route_reason, endpoint = await choose_route(hosts, options.transfer, src, dst, conflicts)
    compress, compress_reason = await _compression(
        options, src_agent, probe, route, src, dst, endpoint, conflicts
    )
    return ClonePlan(
        job_id=job_id,
        source_host=source,
        dest_host=dest,
        vm=vm,
        new_name=new_name,
        new_uuid=new_uuid,
        pool=pool,
        pool_path=pool_path,
        pool_available=available,
        files=tuple(files),
        route=route,
        route_reason=route_reason,
        compress=compress,
        compress_reason=compress_reason,
        required_space=required,
        source_xml=source_xml,
        dest_xml=dest_xml,
        direct=endpoint,
        cdroms_present=cdroms_present,
        conflicts=tuple(conflicts),
        warnings=tuple(warnings),
        replace_existing=replace_existing,
        already_done=already_done,
        options=options,
        tpm=tpm,
    )


def destination_xml(
    source_xml: str,
    files: list[FilePlan],
    source_host: str,
    vm: VM,
    new_name: str,
    new_uuid: str,
    job_id: str,
    options: CloneOptions,
    cdroms_present: frozenset[str],
) -> RewriteResult:
    """The clone's domain definition: new identity, disks re-pointed into the pool."""
    disks = {
        f.label: DiskMapping(f.label, f.final_path, f.format) for f in files if f.role == "disk"
    }
    nvram = next((f.final_path for f in files if f.role == "nvram"), None)
    return rewrite_domain(
        source_xml,
        RewriteOptions(
            new_name=new_name,
            new_uuid=new_uuid,
            disks=disks,
            preserve_mac=options.preserve_mac,
            mac_seed=None,
            cdrom_paths_present=cdroms_present,
            nvram_path=nvram,
            metadata={
                "source-host": source_host,
                "source-uuid": vm.uuid,
                "source-name": vm.name,
                "job": job_id,
            },
        ),
    )


def _is_clone_of(xml: str, source_host: str, source_uuid: str) -> bool:
    meta = read_clone_metadata(xml)
    return meta.get("source-uuid") == source_uuid and meta.get("source-host") == source_host


async def _compression(
    options: CloneOptions,
    src_agent: RemoteAgent,
    dst_probe: dict[str, object],
    route: str,
    src: Host,
    dst: Host,
    endpoint: DirectEndpoint | None,
    conflicts: list[str],
) -> tuple[bool, str]:
    if options.compress == "off":
        return False, "off (--compress off)"
    src_probe = await src_agent.probe()
    both = bool(src_probe.get("zstd")) and bool(dst_probe.get("zstd"))
    if options.compress == "on":
        if not both:
            conflicts.append("--compress on needs zstd on both hosts (apt-get install zstd)")
        return both, "requested with --compress on"
    if not both:
        return False, "auto: zstd is not on both hosts"
    peer = endpoint.address if endpoint else (dst.peer() or ("", 0))[0]
    if _is_loopback(peer):
        return False, "auto: the hosts share this machine's loopback, compressing only costs CPU"
    return True, f"auto: data crosses the network ({route})"


async def _file_plans(
    src: Host,
    agent: RemoteAgent,
    vm: VM,
    new_name: str,
    job_id: str,
    pool_path: str,
    conflicts: list[str],
    warnings: list[str],
    live: bool = False,
) -> list[FilePlan]:
    disks = [d for d in vm.disks if d.device is DiskDevice.DISK]
    for disk in disks:
        if disk.source_type in ("block", "network", "volume", "dir") or disk.path is None:
            conflicts.append(
                f"disk {disk.target} is a {disk.source_type} disk "
                f"({disk.path or 'no path'}): only file-backed disks can be cloned"
            )
    sources: list[tuple[str, str, str, str | None, int | None, str]] = []  # label, role, ...
    for disk in disks:
        if disk.source_type != "file" or disk.path is None:
            continue
        fmt = disk.format or "raw"
        ext = _extension(fmt)
        sources.append(
            (
                disk.target,
                "disk",
                disk.path,
                fmt,
                disk.virtual_size,
                f"{new_name}-{disk.target}.{ext}",
            )
        )
        for i, layer in enumerate(() if live else disk.backing_chain, start=1):
            lfmt = layer.format or "raw"
            sources.append(
                (
                    f"{disk.target}.backing{i}",
                    "backing",
                    layer.path,
                    lfmt,
                    None,
                    f"{new_name}-{disk.target}-backing{i}.{_extension(lfmt)}",
                )
            )
    if vm.nvram:
        sources.append(("nvram", "nvram", vm.nvram, "raw", None, f"{new_name}-nvram.fd"))
    if not sources:
        return []
    paths = [s[2] for s in sources]
    for path in paths:
        try:
            validate_remote_path(path)
        except ValidationError as exc:
            conflicts.append(f"unsafe source path: {exc}")
            return []
    stats = await agent.resolve(paths)
    plans: list[FilePlan] = []
    for (label, role, src_path, file_fmt, virtual, final_name), st in zip(
        sources, stats, strict=True
    ):
        if "error" in st:
            conflicts.append(f"{label}: {src_path}: {st['error']}")
            continue
        if st["kind"] != "file":
            conflicts.append(f"{label}: {src_path} is a {st['kind']} device, not a file")
            continue
        if st["link"]:
            warnings.append(
                f"{label}: {src_path} is a symlink to {st['real']}; its target is copied"
            )
        extents = await agent.extents(st["real"])
        export = label if live and role == "disk" else None
        if export is not None:  # the export is the guest's view: virtual size, data extents
            disk = next(d for d in disks if d.target == label)
            extents = {
                "size": disk.virtual_size or extents["size"],
                "allocated": disk.allocation or extents["allocated"],
            }
        final = posixpath.join(pool_path, final_name)
        try:
            validate_remote_path(final, under=pool_path)
        except ValidationError as exc:
            conflicts.append(f"{label}: the destination path is unsafe: {exc}")
            continue
        plans.append(
            FilePlan(
                label=label,
                role=role,
                format=file_fmt or "raw",
                source_path=st["real"],
                final_path=final,
                staging_path=posixpath.join(pool_path, f"{STAGING_PREFIX}{job_id}-{final_name}"),
                size=int(extents["size"]),
                allocated=int(extents["allocated"]),
                virtual_size=virtual,
                live_export=export,
            )
        )
    return _with_rebases(plans)


def _with_rebases(plans: list[FilePlan]) -> list[FilePlan]:
    """Point each copied overlay at the copy of the layer below it."""
    out = []
    for i, plan in enumerate(plans):
        below = plans[i + 1] if i + 1 < len(plans) else None
        if (
            below is not None
            and below.role == "backing"
            and below.label.split(".")[0] == plan.label.split(".")[0]
        ):
            plan = FilePlan(**{**plan.__dict__, "rebase_to": (below.final_path, below.format)})
        out.append(plan)
    return out
