"""The clone's rules: a pure decision from :class:`~kvm_clone_tui.engine.plan_facts.CloneFacts`.

:func:`decide` runs the rules in a fixed order (the order people read the refusals in) and
builds the plan; each rule reads facts and options and returns typed
:class:`~kvm_clone_tui.api.plans.Conflict` and :class:`~kvm_clone_tui.api.plans.PlanWarning`
values. No rule talks to a host: tests/unit/test_plan_rules.py tests each one with fixed
facts, and the TUI's fakes plan through them.
"""

from __future__ import annotations

import ipaddress
import posixpath

from kvm_clone_tui.api.models import VM, DiskDevice, VMState
from kvm_clone_tui.api.options import CloneOptions
from kvm_clone_tui.api.plans import (
    ClonePlan,
    Conflict,
    DirectEndpoint,
    FilePlan,
    PlanWarning,
    TpmStatePlan,
)
from kvm_clone_tui.api.units import format_bytes
from kvm_clone_tui.api.validation import ValidationError, validate_remote_path
from kvm_clone_tui.engine import cpu_compat
from kvm_clone_tui.engine.domain_rewrite import (
    DiskMapping,
    RewriteError,
    RewriteOptions,
    RewriteResult,
    rewrite_domain,
)
from kvm_clone_tui.engine.journal import STAGING_PREFIX
from kvm_clone_tui.engine.plan_facts import (
    CloneFacts,
    RouteFacts,
    TpmFacts,
    source_files,
    unsafe_source_path,
)
from kvm_clone_tui.engine.tpm_state import staging_dir, state_dir

SPACE_MARGIN_MIN = 64 << 20
SPACE_MARGIN_FRACTION = 0.02
QEMU_UTILS = "apt-get install qemu-utils"

Found = tuple[list[Conflict], list[PlanWarning]]


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


# --- the rules --------------------------------------------------------------------------------


def pool_rule(facts: CloneFacts) -> list[Conflict]:
    """The destination pool must exist, run, and be a directory pool."""
    problem = facts.pool_info.problem
    return [Conflict("pool", problem)] if problem else []


def state_rule(facts: CloneFacts) -> Found:
    """A running (or paused) source is cloned live; other states than shut off are refused."""
    vm = facts.vm
    if facts.live:
        warning = PlanWarning(
            "live",
            f"the source VM is {vm.state.value}: live clone of one point in time through "
            "libvirt's backup API; application-consistent if its guest agent freezes the "
            "filesystems, else crash-consistent (like a power cut); backing chains are flattened",
        )
        return [], [warning]
    if vm.state is not VMState.SHUT_OFF:
        message = f"the source VM is {vm.state.value}: start or shut it down first"
        return [Conflict("vm-state", message, "start or shut it down first")], []
    return [], []


def same_host_rule(facts: CloneFacts) -> list[Conflict]:
    """A clone onto its own host needs another name."""
    if facts.source == facts.dest and facts.new_name == facts.vm.name:
        return [
            Conflict("same-host", "cloning a VM onto its own host needs --new-name", "--new-name")
        ]
    return []


def existing_rule(facts: CloneFacts, options: CloneOptions) -> tuple[list[Conflict], bool, bool]:
    """A VM of the clone's name on the destination: (conflicts, replace it, already done)."""
    existing, name, dest = facts.existing, facts.new_name, facts.dest
    if existing is None:
        return [], False, False
    if options.idempotent and facts.existing_is_clone:
        return [], False, True
    if options.force:
        if existing.state is not VMState.SHUT_OFF:
            message = (
                f"{name} on {dest} is {existing.state.value}: "
                "shut it down before replacing it with --force"
            )
            return [Conflict("replace-running", message, "shut it down")], True, False
        return [], True, False
    message = (
        f"a VM named {name!r} already exists on {dest}: choose "
        "--new-name, or --force to replace it once the copy is verified"
    )
    return [Conflict("name-taken", message, "--new-name, or --force")], False, False


def disk_type_rule(vm: VM) -> list[Conflict]:
    """Only file-backed disks can be cloned."""
    return [
        Conflict(
            "disk-type",
            f"disk {disk.target} is a {disk.source_type} disk "
            f"({disk.path or 'no path'}): only file-backed disks can be cloned",
        )
        for disk in vm.disks
        if disk.device is DiskDevice.DISK
        and (disk.source_type in ("block", "network", "volume", "dir") or disk.path is None)
    ]


def file_rules(facts: CloneFacts) -> tuple[list[FilePlan], list[Conflict], list[PlanWarning]]:
    """The files to copy: each source a regular file, its destination path safe in the pool."""
    conflicts, warnings = disk_type_rule(facts.vm), list[PlanWarning]()
    sources = source_files(facts.vm, facts.new_name, facts.live)
    if not sources:
        return [], conflicts, warnings
    unsafe = unsafe_source_path(sources)
    if unsafe is not None or facts.stats is None:
        return [], [*conflicts, Conflict("unsafe-path", f"unsafe source path: {unsafe}")], warnings
    pool_path, disks = facts.pool_path, {d.target: d for d in facts.vm.disks}
    plans: list[FilePlan] = []
    for source, st in zip(sources, facts.stats, strict=True):
        label, src_path = source.label, source.path
        if "error" in st:
            conflicts.append(Conflict("source-file", f"{label}: {src_path}: {st['error']}"))
            continue
        if st["kind"] != "file":
            message = f"{label}: {src_path} is a {st['kind']} device, not a file"
            conflicts.append(Conflict("source-file", message))
            continue
        if st["link"]:
            message = f"{label}: {src_path} is a symlink to {st['real']}; its target is copied"
            warnings.append(PlanWarning("symlink", message))
        extents = facts.extents[st["real"]]
        export = label if facts.live and source.role == "disk" else None
        if export is not None:  # the export is the guest's view: virtual size, data extents
            disk = disks[label]
            extents = {
                "size": disk.virtual_size or extents["size"],
                "allocated": disk.allocation or extents["allocated"],
            }
        final = posixpath.join(pool_path, source.final_name)
        try:
            validate_remote_path(final, under=pool_path)
        except ValidationError as exc:
            message = f"{label}: the destination path is unsafe: {exc}"
            conflicts.append(Conflict("unsafe-path", message))
            continue
        staging = posixpath.join(pool_path, f"{STAGING_PREFIX}{facts.job_id}-{source.final_name}")
        plans.append(
            FilePlan(
                label=label,
                role=source.role,
                format=source.format or "raw",
                source_path=st["real"],
                final_path=final,
                staging_path=staging,
                size=int(extents["size"]),
                allocated=int(extents["allocated"]),
                virtual_size=source.virtual_size,
                live_export=export,
            )
        )
    return with_rebases(plans), conflicts, warnings


def with_rebases(plans: list[FilePlan]) -> list[FilePlan]:
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


def tpm_rule(facts: CloneFacts) -> tuple[TpmStatePlan | None, list[Conflict], list[PlanWarning]]:
    """One emulated TPM at most, swtpm on the destination, its state readable."""
    tpm: TpmFacts | None = facts.tpm
    if tpm is None or not tpm.devices:
        return None, [], []
    if len(tpm.devices) > 1:
        return None, [Conflict("tpm", "the VM has more than one emulated TPM: not supported")], []
    device, conflicts, warnings = tpm.devices[0], [], []
    if not tpm.dest_has_swtpm:
        fix = "apt-get install swtpm swtpm-tools, or dnf install swtpm swtpm-tools"
        message = (
            f"the VM has an emulated TPM ({device.model}) but {facts.dest} has no swtpm to run "
            f"it ({fix})"
        )
        conflicts.append(Conflict("tpm", message, fix))
    if device.encrypted:
        warnings.append(
            PlanWarning(
                "tpm",
                "tpm: its state is encrypted with a libvirt secret; define the same secret "
                "(same UUID and value) on the destination before starting the clone",
            )
        )
    source = state_dir(facts.vm.uuid)
    if tpm.read_error is not None or tpm.state is None:
        message = f"the TPM state {source} cannot be read on {facts.source}: {tpm.read_error}"
        return None, [*conflicts, Conflict("tpm", message)], warnings
    if not tpm.state["exists"]:
        message = (
            f"tpm: {facts.source} has no TPM state for the VM yet ({source}: it never started); "
            "the clone gets a fresh TPM at its first start"
        )
        return None, conflicts, [*warnings, PlanWarning("tpm", message)]
    if facts.live:
        message = "tpm: the source runs; its TPM state is copied as it is when the copy starts"
        warnings.append(PlanWarning("tpm", message))
    plan = TpmStatePlan(
        source_dir=source,
        staging_dir=staging_dir(facts.job_id, facts.new_uuid),
        final_dir=state_dir(facts.new_uuid),
        size=int(tpm.state["bytes"]),
        digest=str(tpm.state["digest"]),
    )
    return plan, conflicts, warnings


def taken_rule(facts: CloneFacts, files: list[FilePlan], replace_existing: bool) -> list[Conflict]:
    """A destination path that exists belongs to another VM (unless --force replaces its VM)."""
    existing = facts.existing
    own = {d.path for d in (existing.disks if existing and replace_existing else ())}
    return [
        Conflict(
            "path-taken",
            f"{f.final_path} already exists on {facts.dest}: it belongs to another VM "
            "or an earlier copy; choose --new-name or remove it",
            "--new-name",
        )
        for f in files
        if f.final_path in facts.taken and f.final_path not in own
    ]


def tools_rule(facts: CloneFacts, files: list[FilePlan]) -> list[Conflict]:
    """qemu-img on the destination when a live copy is converted or a chain re-pointed."""
    if facts.dest_probe.get("qemu_img"):
        return []
    conflicts = []
    if any(f.raw_staging_path for f in files):
        message = (
            f"{facts.dest} needs qemu-img to turn the live copy back into its format ({QEMU_UTILS})"
        )
        conflicts.append(Conflict("tool-missing", message, QEMU_UTILS))
    if any(f.rebase_to for f in files):
        message = f"{facts.dest} needs qemu-img to re-point the copied backing chain ({QEMU_UTILS})"
        conflicts.append(Conflict("tool-missing", message, QEMU_UTILS))
    return conflicts


def required_space(files: list[FilePlan]) -> int:
    """The data plus a margin; a live copy of a non-raw disk exists twice for a moment."""
    total = sum(f.allocated * (2 if f.raw_staging_path else 1) for f in files)
    return total + max(SPACE_MARGIN_MIN, int(total * SPACE_MARGIN_FRACTION))


def space_rule(facts: CloneFacts, required: int, already_done: bool) -> list[Conflict]:
    """The pool must hold the data plus a margin."""
    available = facts.pool_info.available
    if facts.pool_info.problem or required <= available or already_done:
        return []
    message = (
        f"not enough space in pool {facts.pool} on {facts.dest}: needs "
        f"{format_bytes(required)} (data plus margin), has {format_bytes(available)}"
    )
    return [Conflict("space", message)]


def limits_rule(facts: CloneFacts) -> list[PlanWarning]:
    """Memory, CPUs and KVM on the destination (warnings: the clone is made, it may not start)."""
    vm, limits, warnings = facts.vm, facts.limits, []
    if vm.memory_kib // 1024 > limits.memory_mib:
        message = (
            f"the VM has {format_bytes(vm.memory_kib * 1024)} of memory, the "
            f"destination only {format_bytes(limits.memory_mib << 20)}"
        )
        warnings.append(PlanWarning("memory", message))
    if vm.vcpus > limits.cpus:
        message = f"the VM has {vm.vcpus} vCPUs, the destination {limits.cpus} CPUs"
        warnings.append(PlanWarning("cpus", message))
    caps = limits.capabilities
    if vm.domain_type == "kvm" and "type='kvm'" not in caps and 'type="kvm"' not in caps:
        message = (
            "the destination offers no KVM acceleration: the clone will not start "
            "until its domain type is changed to qemu"
        )
        warnings.append(PlanWarning("kvm", message))
    return warnings


def cpu_rule(facts: CloneFacts) -> Found:
    """The VM's CPU must be one the destination can give (``engine/cpu_compat.py``)."""
    verdict = cpu_compat.decide(facts.guest_cpu, facts.vm.name, facts.source_cpu, facts.dest_cpu)
    return (
        [Conflict("cpu", c) for c in verdict.conflicts],
        [PlanWarning("cpu", w) for w in verdict.warnings],
    )


def decide_route(
    transfer: str, source: str, facts: RouteFacts
) -> tuple[str, str, DirectEndpoint | None, list[Conflict]]:
    """(route, why, endpoint, conflicts): direct when every prerequisite holds, else relay
    (an impossible ``--transfer direct`` is refused)."""
    if transfer == "relay":
        return "relay", "requested with --transfer relay", None, []
    problem = None
    if not facts.agent_forwarding:
        problem = "ssh.agent_forwarding is off"
    elif not facts.agent_has_keys:
        problem = (
            "no SSH agent with keys to forward (start ssh-agent and ssh-add your key "
            "for direct host-to-host copies)"
        )
    elif not facts.source_has_ssh:
        problem = f"{source} has no ssh client"
    elif facts.endpoint is None:
        problem = "the destination's host key is unknown"
    if problem is None:
        assert facts.endpoint is not None
        endpoint = facts.endpoint
        why = f"{source} sends straight to {endpoint.address}:{endpoint.port}"
        return "direct", why, endpoint, []
    conflicts = []
    if transfer == "direct":
        conflicts.append(Conflict("route", f"--transfer direct is impossible: {problem}"))
    return "relay", f"through this machine: {problem}", None, conflicts


def compression_rule(
    facts: CloneFacts, options: CloneOptions, route: str, endpoint: DirectEndpoint | None
) -> tuple[bool, str, list[Conflict]]:
    """zstd when asked for, or (auto) when data crosses the network and both hosts have it."""
    if options.compress == "off":
        return False, "off (--compress off)", []
    both = bool(facts.source_zstd) and bool(facts.dest_probe.get("zstd"))
    if options.compress == "on":
        fix = "apt-get install zstd"
        conflicts = (
            []
            if both
            else [Conflict("compression", f"--compress on needs zstd on both hosts ({fix})", fix)]
        )
        return both, "requested with --compress on", conflicts
    if not both:
        return False, "auto: zstd is not on both hosts", []
    peer = endpoint.address if endpoint else facts.dest_peer
    if _is_loopback(peer):
        return (
            False,
            "auto: the hosts share this machine's loopback, compressing only costs CPU",
            [],
        )
    return True, f"auto: data crosses the network ({route})", []


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


def definition_rule(
    facts: CloneFacts, files: list[FilePlan], options: CloneOptions
) -> tuple[str, list[Conflict], list[PlanWarning]]:
    """The clone's definition (its warnings), or why the source's cannot be cloned."""
    try:
        rewritten = destination_xml(
            facts.source_xml,
            files,
            facts.source,
            facts.vm,
            facts.new_name,
            facts.new_uuid,
            facts.job_id,
            options,
            facts.cdroms_present,
        )
    except RewriteError as exc:
        return "", [Conflict("definition", f"the domain definition cannot be cloned: {exc}")], []
    return rewritten.xml, [], [PlanWarning("definition", w) for w in rewritten.warnings]


# --- the decision -----------------------------------------------------------------------------


def decide(facts: CloneFacts, options: CloneOptions) -> ClonePlan:
    """The plan the facts and options give: every rule in turn, conflicts collected."""
    conflicts: list[Conflict] = pool_rule(facts)
    warnings = [PlanWarning("vm", w) for w in facts.vm.warnings]
    found, noted = state_rule(facts)
    conflicts += found + same_host_rule(facts)
    warnings += noted
    found, replace_existing, already_done = existing_rule(facts, options)
    conflicts += found
    files, found, noted = file_rules(facts)
    conflicts += found
    warnings += noted
    tpm, found, noted = tpm_rule(facts)
    conflicts += found
    warnings += noted
    if files and not conflicts and not already_done:
        conflicts += taken_rule(facts, files, replace_existing)
    conflicts += tools_rule(facts, files)
    required = required_space(files)
    conflicts += space_rule(facts, required, already_done)
    warnings += limits_rule(facts)
    found, noted = cpu_rule(facts)
    conflicts += found
    warnings += noted
    dest_xml = ""
    if not conflicts:
        dest_xml, found, noted = definition_rule(facts, files, options)
        conflicts += found
        warnings += noted
    route, route_reason, endpoint, found = decide_route(options.transfer, facts.source, facts.route)
    conflicts += found
    compress, compress_reason, found = compression_rule(facts, options, route, endpoint)
    conflicts += found
    return ClonePlan(
        job_id=facts.job_id,
        source_host=facts.source,
        dest_host=facts.dest,
        vm=facts.vm,
        new_name=facts.new_name,
        new_uuid=facts.new_uuid,
        pool=facts.pool,
        pool_path=facts.pool_path,
        pool_available=facts.pool_info.available,
        files=tuple(files),
        route=route,
        route_reason=route_reason,
        compress=compress,
        compress_reason=compress_reason,
        required_space=required,
        source_xml=facts.source_xml,
        dest_xml=dest_xml,
        direct=endpoint,
        cdroms_present=facts.cdroms_present,
        conflicts=tuple(conflicts),
        warnings=tuple(warnings),
        replace_existing=replace_existing,
        already_done=already_done,
        options=options,
        tpm=tpm,
    )
