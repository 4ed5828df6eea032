"""The host port: what the engine asks of a host, and of the registry that hands hosts out.

Engine modules take a :class:`Hosts` registry and talk to each :class:`Host` through the
methods below only: commands, processes, and the libvirt operations the engine needs (domain
XML, define/undefine/start, metadata, checkpoints and backup jobs, pools, the host's limits and
CPU, the inventory). They never see ``virConnect``, lambdas run in libvirt's thread pool, or
the SSH connection. One implementation exists, over asyncssh + libvirt
(:class:`~kvm_clone_tui.engine.hosts.SSHHost`, its libvirt side in ``engine/host_libvirt.py``);
how a host is reached (root, libvirt group, sudo) plugs in there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import asyncssh

    from kvm_clone_tui.api.config import Config
    from kvm_clone_tui.api.models import VM, HostInventory
    from kvm_clone_tui.engine.cpu_compat import GuestCpu, HostView


@dataclass(frozen=True)
class CommandResult:
    """What a remote command printed and how it ended."""

    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class PoolInfo:
    """A destination storage pool as the planner sees it (``problem`` set: it cannot be used)."""

    path: str | None
    available: int
    problem: str | None = None


@dataclass(frozen=True)
class HostLimits:
    """What a host can give a VM: memory (MiB), CPUs, and libvirt's capabilities document."""

    memory_mib: int
    cpus: int
    capabilities: str


@dataclass(frozen=True)
class BackupStarted:
    """A backup job begun: how consistent its point in time is, and the dirty bitmaps its
    exports offer (disk target -> NBD metadata context) for an incremental one."""

    consistency: str  # application-consistent | crash-consistent
    bitmaps: dict[str, str]


class Host(Protocol):
    """One connected host."""

    name: str
    #: Facts learnt over this connection (e.g. where the agent is installed).
    cache: dict[str, object]

    # --- commands and processes -----------------------------------------------------------

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = 120,
    ) -> CommandResult:
        """Run ``argv`` (every argument shell-quoted, never interpolated)."""
        ...

    async def open_process(
        self, argv: Sequence[str], *, window: int | None = None
    ) -> asyncssh.SSHClientProcess[bytes]:
        """Start ``argv`` with binary stdin/stdout/stderr streams (a copy's sender/receiver)."""
        ...

    def host_key_line(self) -> str | None:
        """The host key this connection verified, ``"type base64"`` (None: unknown)."""
        ...

    def peer(self) -> tuple[str, int] | None:
        """The address and port this connection reached (None: unknown)."""
        ...

    def address(self) -> str:
        """The host name or address the operator's spec (with the config's overrides) names."""
        ...

    def login_user(self) -> str:
        """The user this connection logged in as."""
        ...

    def is_closed(self) -> bool:
        """True once the connection has dropped or been closed."""
        ...

    async def wait_closed(self) -> None:
        """Return when the connection ends."""
        ...

    async def close(self) -> None:
        """Close the connection (libvirt first)."""
        ...

    # --- domains ----------------------------------------------------------------------------

    async def domain_xml(self, vm: str, *, inactive: bool = False, secure: bool = False) -> str:
        """The definition of VM ``vm`` (the live one unless ``inactive``; ``secure``: with
        secrets such as VNC passwords)."""
        ...

    async def define(self, xml: str) -> None:
        """Define (or redefine) a domain from ``xml``."""
        ...

    async def start(self, uuid: str) -> None:
        """Start the domain ``uuid``."""
        ...

    async def undefine_keeping_state(self, vm: str) -> None:
        """Undefine ``vm`` keeping its NVRAM and TPM state (restorable); drops managed save."""
        ...

    async def remove_domain(self, uuid: str) -> None:
        """Stop and undefine domain ``uuid`` with its NVRAM and managed save (gone: no error)."""
        ...

    async def edit_metadata(
        self, uuid: str, key: str, uri: str, edit: Callable[[str], str]
    ) -> None:
        """Set the persistent metadata element of namespace ``uri`` to ``edit(inactive XML)``."""
        ...

    # --- checkpoints and backup jobs --------------------------------------------------------

    async def redefine_checkpoint(self, vm: str, make_xml: Callable[[str], str]) -> None:
        """Define checkpoint metadata ``make_xml(inactive XML)`` for shut-off ``vm`` (refused
        if it runs)."""
        ...

    async def delete_checkpoint(self, vm: str, name: str) -> list[str] | None:
        """Delete checkpoint ``name`` of ``vm`` (missing: no error). A running VM's goes
        through libvirt (None); a shut-off VM's metadata goes, and its qcow2 image paths are
        returned for the caller to remove the bitmaps. None also when ``vm`` is gone."""
        ...

    async def checkpoint_problem(self, vm: str, name: str, running: bool) -> str | None:
        """Why libvirt cannot serve checkpoint ``name`` of ``vm`` (None: it knows it, and a
        running VM has its bitmaps)."""
        ...

    async def backup_begin(
        self,
        vm: str,
        backup_xml: str,
        checkpoint_xml: str | None,
        incremental_disks: Sequence[str] | None,
    ) -> BackupStarted:
        """Freeze, begin the backup job, thaw; with ``incremental_disks``, the dirty bitmaps
        its exports of those disks offer."""
        ...

    async def backup_end(self, vm: str) -> None:
        """End the VM's backup job (never another kind of job); harmless if none runs."""
        ...

    # --- what the host offers ---------------------------------------------------------------

    async def pool(self, name: str) -> PoolInfo:
        """A directory storage pool's path and free bytes (refreshed), or why it is unusable."""
        ...

    async def limits(self) -> HostLimits:
        """The host's memory, CPUs and capabilities."""
        ...

    async def cpu_view(self, guest: GuestCpu) -> HostView:
        """What this host's libvirt says about the CPU ``guest`` asks for."""
        ...

    async def read_inventory(self) -> HostInventory:
        """Every VM and pool of the host."""
        ...

    async def read_vm(self, vm: str) -> VM | None:
        """One VM as the inventory describes it (None: there is none by that name)."""
        ...

    async def watch_domains(self, callback: Callable[[str, int, int], None]) -> None:
        """Call ``callback(name, event, detail)`` on the event loop for lifecycle events."""
        ...


class Hosts(Protocol):
    """The hosts an engine operation works on, by the names the operator uses."""

    @property
    def config(self) -> Config:
        """The configuration (pools per host, reach addresses)."""
        ...

    @property
    def agent_forwarding(self) -> bool:
        """Whether connections forward the local SSH agent (direct copies need it)."""
        ...

    async def host(self, name: str) -> Host:
        """The connected host ``name`` (one login per host, shared)."""
        ...

    async def inventory(self, name: str, *, fresh: bool = True) -> HostInventory:
        """Host ``name``'s VMs and pools (``fresh``: read again)."""
        ...
