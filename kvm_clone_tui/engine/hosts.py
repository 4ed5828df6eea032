"""A connected host: one SSH connection that serves commands and libvirt."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import asyncssh

from kvm_clone_tui.api.errors import HostError, RemoteCommandError
from kvm_clone_tui.api.validation import HostSpec, parse_host_spec, shell_quote_argv
from kvm_clone_tui.engine.libvirt_conn import DEFAULT_URI, LibvirtConnection
from kvm_clone_tui.engine.ssh import SSHSettings, connect


@dataclass(frozen=True)
class CommandResult:
    """What a remote command printed and how it ended."""

    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str


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


class Host:
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
    async def connect(cls, target: HostTarget, settings: SSHSettings) -> Host:
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

    async def close(self) -> None:
        """Close libvirt first, then the SSH connection."""
        await self.libvirt.close()
        self.ssh.close()
        await self.ssh.wait_closed()
