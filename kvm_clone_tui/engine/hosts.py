"""The host port's one implementation: an SSH connection that serves commands and libvirt.

:class:`SSHHost` implements :class:`~kvm_clone_tui.engine.host_port.Host` over asyncssh, with
libvirt tunnelled through the same login (its operations in ``engine/host_libvirt.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import asyncssh

from kvm_clone_tui.api.errors import HostError, RemoteCommandError
from kvm_clone_tui.api.validation import HostSpec, parse_host_spec, shell_quote_argv
from kvm_clone_tui.engine import host_libvirt, inventory
from kvm_clone_tui.engine.cpu_compat import read_view
from kvm_clone_tui.engine.host_port import (
    BackupStarted,
    CommandResult,
    Host,
    HostLimits,
    PoolInfo,
)
from kvm_clone_tui.engine.libvirt_conn import DEFAULT_URI, LibvirtConnection
from kvm_clone_tui.engine.ssh import SSHSettings, connect

if TYPE_CHECKING:
    from kvm_clone_tui.api.models import VM, HostInventory
    from kvm_clone_tui.engine.cpu_compat import GuestCpu, HostView

__all__ = ["CommandResult", "Host", "HostTarget", "SSHHost"]

T = TypeVar("T")


@dataclass(frozen=True)
class HostTarget:
    """Where and how to reach one host: the name the operator uses and its overrides."""

    name: str
    spec: HostSpec
    uri: str = DEFAULT_URI
    libvirt_socket: str | None = None

    @classmethod
    def parse(cls, name: str) -> HostTarget:
        """A target with no overrides, from ``[user@]host[:port]`` or an ssh alias."""
        return cls(name=name, spec=parse_host_spec(name))


class SSHHost:
    """A host reached over SSH, with libvirt tunnelled through the same connection."""

    def __init__(
        self, target: HostTarget, ssh: asyncssh.SSHClientConnection, libvirt: LibvirtConnection
    ) -> None:
        self.target = target
        self.name = target.name
        self.ssh = ssh
        self.libvirt = libvirt
        #: Facts learnt over this connection (e.g. where the agent is installed).
        self.cache: dict[str, object] = {}

    @classmethod
    async def connect(cls, target: HostTarget, settings: SSHSettings) -> SSHHost:
        """Log in once and open libvirt through that login."""
        ssh = await connect(target.spec, settings)
        libvirt = LibvirtConnection(
            target.name, ssh, uri=target.uri, remote_socket=target.libvirt_socket
        )
        try:
            await libvirt.open(timeout=max(settings.connect_timeout, 5) * 3)
        except BaseException:
            ssh.close()
            raise
        return cls(target, ssh, libvirt)

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = 120,
    ) -> CommandResult:
        """Run ``argv`` on the host; every argument is shell-quoted, never interpolated."""
        if not argv:
            raise ValueError("empty command")
        command = shell_quote_argv(argv)
        try:
            done = await asyncio.wait_for(self.ssh.run(command, input=input, check=False), timeout)
        except asyncio.TimeoutError as exc:
            raise RemoteCommandError(self.name, f"`{command}` timed out after {timeout} s") from exc
        except asyncssh.Error as exc:
            raise HostError(self.name, f"`{command}` failed: {exc}") from exc
        result = CommandResult(
            argv=tuple(argv),
            exit_status=done.exit_status if done.exit_status is not None else -1,
            stdout=str(done.stdout or ""),
            stderr=str(done.stderr or ""),
        )
        if check and result.exit_status != 0:
            detail = result.stderr.strip().splitlines()[-1:] or [f"exit {result.exit_status}"]
            raise RemoteCommandError(self.name, f"`{command}` failed: {detail[0]}")
        return result

    async def open_process(
        self, argv: Sequence[str], *, window: int | None = None
    ) -> asyncssh.SSHClientProcess[bytes]:
        """Start ``argv`` with binary streams (``window``: the SSH channel's receive window)."""
        extra: dict[str, Any] = {} if window is None else {"window": window}
        process: asyncssh.SSHClientProcess[bytes] = await self.ssh.create_process(
            shell_quote_argv(argv), encoding=None, **extra
        )
        return process

    def host_key_line(self) -> str | None:
        """The verified host key as ``"type base64"`` (None: unknown)."""
        key = self.ssh.get_server_host_key()
        if key is None:
            return None
        return " ".join(key.export_public_key("openssh").decode().split()[:2])

    def peer(self) -> tuple[str, int] | None:
        """The address and port this connection reached (None: unknown)."""
        peer = self.ssh.get_extra_info("peername")
        return (str(peer[0]), int(peer[1])) if peer else None

    def address(self) -> str:
        """The host name or address the target names."""
        return self.target.spec.host

    def login_user(self) -> str:
        """The user this connection logged in as."""
        return str(self.ssh.get_extra_info("username") or "root")

    def is_closed(self) -> bool:
        """True once the SSH connection has dropped or been closed."""
        return bool(self.ssh.is_closed())

    async def wait_closed(self) -> None:
        """Return when the SSH connection ends."""
        await self.ssh.wait_closed()

    async def close(self) -> None:
        """Close libvirt first, then the SSH connection."""
        await self.libvirt.close()
        self.ssh.close()
        await self.ssh.wait_closed()

    # --- libvirt: each operation is one call in the connection's thread pool -----------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.libvirt.call(lambda conn: fn(conn, *args))

    async def domain_xml(self, vm: str, *, inactive: bool = False, secure: bool = False) -> str:
        """The definition of ``vm`` (the live one unless ``inactive``)."""
        return await self._call(host_libvirt.domain_xml, vm, inactive, secure)

    async def define(self, xml: str) -> None:
        """Define (or redefine) a domain."""
        await self._call(host_libvirt.define, xml)

    async def start(self, uuid: str) -> None:
        """Start domain ``uuid``."""
        await self._call(host_libvirt.start, uuid)

    async def undefine_keeping_state(self, vm: str) -> None:
        """Undefine ``vm``, keeping its NVRAM and TPM state."""
        await self._call(host_libvirt.undefine_keeping_state, vm)

    async def remove_domain(self, uuid: str) -> None:
        """Stop and undefine domain ``uuid`` with its NVRAM (gone: no error)."""
        await self._call(host_libvirt.remove_domain, uuid)

    async def edit_metadata(
        self, uuid: str, key: str, uri: str, edit: Callable[[str], str]
    ) -> None:
        """Set namespace ``uri``'s persistent metadata to ``edit(inactive XML)``."""
        await self._call(host_libvirt.edit_metadata, uuid, key, uri, edit)

    async def redefine_checkpoint(self, vm: str, make_xml: Callable[[str], str]) -> None:
        """Define checkpoint metadata for shut-off ``vm``."""
        await self._call(host_libvirt.redefine_checkpoint, vm, make_xml)

    async def delete_checkpoint(self, vm: str, name: str) -> list[str] | None:
        """Delete a checkpoint; a shut-off VM's qcow2 paths for its bitmaps."""
        return await self._call(host_libvirt.delete_checkpoint, vm, name)

    async def checkpoint_problem(self, vm: str, name: str, running: bool) -> str | None:
        """Why libvirt cannot serve checkpoint ``name`` (None: it can)."""
        return await self._call(host_libvirt.checkpoint_problem, vm, name, running)

    async def backup_begin(
        self,
        vm: str,
        backup_xml: str,
        checkpoint_xml: str | None,
        incremental_disks: Sequence[str] | None,
    ) -> BackupStarted:
        """Freeze, begin the backup job, thaw."""
        return await self._call(
            host_libvirt.backup_begin, vm, backup_xml, checkpoint_xml, incremental_disks
        )

    async def backup_end(self, vm: str) -> None:
        """End the VM's backup job, if one runs."""
        await self._call(host_libvirt.backup_end, vm)

    async def pool(self, name: str) -> PoolInfo:
        """A directory pool's path and free bytes, or why it is unusable."""
        return await self._call(host_libvirt.pool, name)

    async def limits(self) -> HostLimits:
        """Memory, CPUs and capabilities."""
        return await self._call(host_libvirt.limits)

    async def cpu_view(self, guest: GuestCpu) -> HostView:
        """This host's libvirt on the CPU ``guest`` asks for."""
        return await self._call(read_view, self.name, guest)

    async def read_inventory(self) -> HostInventory:
        """Every VM and pool (domains read several at a time)."""
        return await inventory.read_inventory_parallel(self.libvirt, self.name)

    async def read_vm(self, vm: str) -> VM | None:
        """One VM (None: none by that name)."""
        return await self._call(inventory.read_one_vm, vm)

    async def watch_domains(self, callback: Callable[[str, int, int], None]) -> None:
        """Lifecycle events of every domain, on the event loop."""
        await self.libvirt.register_domain_events(callback)


def _conforms(host: SSHHost) -> Host:
    return host  # mypy checks here that SSHHost implements the port
