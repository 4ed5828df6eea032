"""The plans: a clone or a sync checked and decided before a single byte moves.

A plan is also what ``--dry-run`` prints and what the TUI shows before it starts: the files
with their sizes and paths, the route the data takes and why, conflicts (which refuse the job)
and warnings, each a typed value (kind, message, fix). The engine builds plans: it gathers the
facts from the hosts, then pure rules decide (``engine/plan_facts.py`` and
``engine/plan_rules.py`` for clones, ``engine/sync_plan.py`` for syncs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvm_clone_tui.api.models import VM, DiskDevice
from kvm_clone_tui.api.options import CloneOptions, SyncOptions
from kvm_clone_tui.api.units import format_bytes


@dataclass(frozen=True)
class Finding:
    """What a planning rule found: which rule (``kind``), the sentence people read
    (``message``, which says what to do), and the remedy alone when there is one (``fix``)."""

    kind: str
    message: str
    fix: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Conflict(Finding):
    """A finding that refuses the job."""


@dataclass(frozen=True)
class PlanWarning(Finding):
    """Something the job does or meets that people should know; it does not refuse the job."""


@dataclass(frozen=True)
class DirectEndpoint:
    """How the source host reaches the destination's sshd, and the key it must present."""

    address: str
    port: int
    user: str
    host_key: str  # "ssh-ed25519 AAAA..." as verified by the operator's connection


@dataclass(frozen=True)
class BitmapDisk:
    """A source disk that carries the checkpoint's bitmap."""

    target: str
    path: str


def bitmap_disks(vm: VM) -> tuple[list[BitmapDisk], str | None]:
    """The VM's disks that can carry bitmaps, or why the VM cannot (then the list is empty).

    Every disk must be a qcow2 file without a backing chain: a bitmap records writes to the top
    image only, and raw images have no place for one.
    """
    disks: list[BitmapDisk] = []
    for disk in vm.disks:
        if disk.device is not DiskDevice.DISK:
            continue
        if disk.source_type != "file" or disk.path is None:
            return [], f"disk {disk.target} is not a file"
        if disk.format != "qcow2":
            return [], f"disk {disk.target} is {disk.format or 'raw'}: dirty bitmaps need qcow2"
        if disk.backing_chain:
            return [], f"disk {disk.target} has a backing chain: its bitmap covers the top only"
        disks.append(BitmapDisk(disk.target, disk.path))
    if not disks:
        return [], "the VM has no disk"
    return disks, None


@dataclass(frozen=True)
class TpmStatePlan:
    """Where the clone's TPM state comes from and goes (decided by the plan)."""

    source_dir: str  # /var/lib/libvirt/swtpm/<source uuid>
    staging_dir: str  # /var/lib/libvirt/swtpm/.kvmclone-partial-<job>-<new uuid>
    final_dir: str  # /var/lib/libvirt/swtpm/<new uuid>
    size: int  # bytes of state at planning time
    digest: str  # sha256 over the tree at planning time (informative: copied again at run)


@dataclass(frozen=True)
class FilePlan:
    """One file to copy: a disk image, a layer of its backing chain, or the NVRAM."""

    label: str  # vda, vda.backing1, nvram
    role: str  # disk | backing | nvram
    format: str
    source_path: str
    final_path: str
    staging_path: str
    size: int  # apparent size of the source file
    allocated: int  # data bytes that will move
    virtual_size: int | None = None
    rebase_to: tuple[str, str] | None = None  # (final backing path, format) once staged
    live_export: str | None = None  # live clone: read this export of the source's backup job

    @property
    def raw_staging_path(self) -> str | None:
        """Live clones of non-raw disks arrive raw here, then become ``format`` at staging."""
        if self.live_export is None or self.format == "raw":
            return None
        return self.staging_path + ".raw"


@dataclass(frozen=True)
class ClonePlan:
    """A checked clone, ready to run (when ``ok``)."""

    job_id: str
    source_host: str
    dest_host: str
    vm: VM
    new_name: str
    new_uuid: str
    pool: str
    pool_path: str
    pool_available: int
    files: tuple[FilePlan, ...]
    route: str  # direct | relay
    route_reason: str
    compress: bool
    compress_reason: str
    required_space: int
    source_xml: str
    dest_xml: str = ""  # the definition the clone gets (empty when conflicts refuse it)
    direct: DirectEndpoint | None = None
    cdroms_present: frozenset[str] = frozenset()
    conflicts: tuple[Conflict, ...] = ()
    warnings: tuple[PlanWarning, ...] = ()
    replace_existing: bool = False
    already_done: bool = False
    options: CloneOptions = field(default_factory=CloneOptions)
    tpm: TpmStatePlan | None = None  # the emulated TPM's state to copy (None: none to copy)

    @property
    def ok(self) -> bool:
        """True when nothing refuses the clone."""
        return not self.conflicts

    @property
    def live(self) -> bool:
        """True when the source runs: its disks are read from a backup job's point in time."""
        return any(f.live_export for f in self.files)

    @property
    def total_bytes(self) -> int:
        """Data bytes to move, all files together."""
        return sum(f.allocated for f in self.files)

    def checkpoint_note(self) -> str:
        """What the clone leaves on the source for later syncs (docs/sync.md)."""
        if not self.options.checkpoint:
            return "none (--no-checkpoint): syncs compare block hashes"
        disks, why = bitmap_disks(self.vm)
        if why is not None or not disks:
            return f"none ({why}): syncs compare block hashes"
        return (
            f"kvmclone-{self.job_id} on {self.source_host} (a dirty bitmap per disk): "
            "syncs read only what changes"
        )

    def describe(self) -> str:
        """The plan for people (what ``--dry-run`` prints)."""
        lines = [
            f"clone {self.vm.name} ({self.vm.state.value}) from {self.source_host} "
            f"to {self.dest_host} as {self.new_name}",
            f"  uuid {self.new_uuid}, pool {self.pool} ({self.pool_path})",
            f"  data path: {self.route} ({self.route_reason})",
            f"  compression: {'on' if self.compress else 'off'} ({self.compress_reason})",
            f"  space: needs {format_bytes(self.required_space)}, "
            f"{format_bytes(self.pool_available)} free",
        ]
        for f in self.files:
            virtual = f" virtual {format_bytes(f.virtual_size)}," if f.virtual_size else ""
            lines.append(
                f"  {f.label:<14} {f.format:<6}{virtual} {format_bytes(f.allocated)} to copy: "
                f"{f.source_path} -> {f.final_path}"
            )
        if self.tpm is not None:
            lines.append(
                f"  {'tpm':<14} state  {format_bytes(self.tpm.size)} to copy: "
                f"{self.tpm.source_dir} -> {self.tpm.final_dir}"
            )
        if self.replace_existing:
            lines.append(
                f"  replaces the existing {self.new_name} on {self.dest_host} "
                "once the copy is verified"
            )
        if self.already_done:
            lines.append("  already done: the destination VM is a clone of this VM")
        lines.append(f"  checkpoint: {self.checkpoint_note()}")
        lines += [f"  WARNING: {w.message}" for w in self.warnings]
        lines += [f"  REFUSED: {c.message}" for c in self.conflicts]
        return "\n".join(lines)


@dataclass(frozen=True)
class FilePair:
    """A source file and the clone's file that must become identical to it."""

    label: str
    source_path: str
    dest_path: str


@dataclass(frozen=True)
class SyncPlan:
    """What a sync will compare and why it can (or cannot) run."""

    job_id: str
    source_host: str
    dest_host: str
    vm: VM
    target: str
    target_uuid: str
    pairs: tuple[FilePair, ...]
    mode: str
    mode_reason: str
    dest_xml: str
    conflicts: tuple[Conflict, ...] = ()
    warnings: tuple[PlanWarning, ...] = ()
    options: SyncOptions = SyncOptions()  # noqa: RUF009 (frozen: one shared default is safe)
    source_running: bool = False
    base_checkpoint: str | None = None  # bitmap mode: the changes since this checkpoint move
    new_checkpoint: str | None = None  # left on the source for the next sync (qcow2 disks)
    bitmap_disks: tuple[BitmapDisk, ...] = ()
    all_targets: tuple[str, ...] = ()
    virtual_sizes: tuple[tuple[str, int], ...] = ()  # disk target -> bytes the guest sees
    dest_formats: tuple[tuple[str, str], ...] = ()  # the clone's disk target -> its format
    route: str = "relay"
    route_reason: str = ""
    direct: DirectEndpoint | None = None

    @property
    def ok(self) -> bool:
        """True when nothing refuses the sync."""
        return not self.conflicts

    def describe(self) -> str:
        """The plan for people (``--dry-run``)."""
        lines = [
            f"sync {self.vm.name} ({self.source_host}) -> {self.target} ({self.dest_host})",
            f"  mode: {self.mode} ({self.mode_reason})",
            f"  data path: {self.route} ({self.route_reason})",
        ]
        lines += [f"  {p.label:<14} {p.source_path} -> {p.dest_path}" for p in self.pairs]
        if self.new_checkpoint:
            lines.append(
                f"  checkpoint:    {self.base_checkpoint or '(none)'} -> {self.new_checkpoint} "
                "(on the source, for the next sync)"
            )
        if self.options.checkpoint:
            lines.append("  undo:          what the sync overwrites is kept (kvm-clone revert)")
        lines += [f"  WARNING: {w.message}" for w in self.warnings]
        lines += [f"  REFUSED: {c.message}" for c in self.conflicts]
        return "\n".join(lines)
