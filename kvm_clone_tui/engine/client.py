"""The Python API: ``async with KVMCloneClient() as client: await client.list_vms([...])``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from types import TracebackType

from kvm_clone_tui.engine.config import Config, load_config
from kvm_clone_tui.engine.errors import HostError, KVMCloneError, LibvirtError
from kvm_clone_tui.engine.hosts import Host, HostTarget
from kvm_clone_tui.engine.inventory import InventoryTracker
from kvm_clone_tui.engine.models import HostInventory, VMState
from kvm_clone_tui.engine.ssh import SSHSettings
from kvm_clone_tui.engine.validation import ValidationError, parse_host_spec


@dataclass(frozen=True)
class HostListing:
    """One host's answer to ``list_vms``: its inventory, or why there is none."""

    host: str
    inventory: HostInventory | None
    error: KVMCloneError | None = None


def ssh_settings(config: Config) -> SSHSettings:
    """The SSH settings that the ``ssh`` section of the configuration describes."""
    ssh = config.ssh
    return SSHSettings(
        config_files=(ssh.config_file_path,) if ssh.config_file_path else (),
        known_hosts=ssh.known_hosts_path,
        host_key_policy=ssh.host_key_policy,
        connect_timeout=float(ssh.connect_timeout),
        keepalive_interval=float(ssh.keepalive_interval),
        retry_delays=ssh.retry_delays,
        agent_forwarding=ssh.agent_forwarding,
    )


def host_target(config: Config, name: str) -> HostTarget:
    """Where host ``name`` is: the command-line spec with the configuration's overrides."""
    spec = parse_host_spec(name)  # refuses hostile names before anything else happens
    override = config.host(name)
    spec = replace(
        spec,
        host=override.address or override.ssh_config_host or spec.host,
        user=spec.user or override.user,
        port=spec.port or override.port,
    )
    return HostTarget(name=name, spec=spec, uri=override.uri, libvirt_socket=override.socket_path)


class KVMCloneClient:
    """Connections to hosts, opened on first use and shared by everything until closed."""

    def __init__(self, config: Config | None = None, *, ssh: SSHSettings | None = None) -> None:
        self.config = config if config is not None else load_config()
        self.ssh_settings = ssh if ssh is not None else ssh_settings(self.config)
        self._hosts: dict[str, asyncio.Task[Host]] = {}
        self._trackers: dict[str, InventoryTracker] = {}

    async def __aenter__(self) -> KVMCloneClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def host(self, name: str) -> Host:
        """The connected host ``name`` (one SSH login per host, shared by all callers)."""
        task = self._hosts.get(name)
        if task is None or (task.done() and (task.cancelled() or task.exception())):
            target = host_target(self.config, name)
            task = asyncio.get_running_loop().create_task(Host.connect(target, self.ssh_settings))
            self._hosts[name] = task
        return await asyncio.shield(task)

    async def tracker(self, name: str) -> InventoryTracker:
        """The live inventory of host ``name`` (read once, then kept current by events)."""
        tracker = self._trackers.get(name)
        host = await self.host(name)
        if tracker is None or tracker.host is not host:
            tracker = InventoryTracker(host)
            self._trackers[name] = tracker
            await tracker.refresh()
        return tracker

    async def inventory(self, name: str, *, fresh: bool = True) -> HostInventory:
        """Host ``name``'s VMs and pools; ``fresh`` re-reads it instead of using the tracker."""
        tracker = await self.tracker(name)
        if fresh or tracker.inventory is None:
            return await tracker.refresh()
        return tracker.inventory

    async def list_vms(
        self, hosts: Sequence[str], *, status: VMState | None = None
    ) -> list[HostListing]:
        """The VMs of each host, read in parallel; a failing host reports its error."""
        for name in hosts:
            parse_host_spec(name)  # all names are checked before any connection is made

        async def one(name: str) -> HostListing:
            try:
                inventory = await self.inventory(name)
            except (HostError, ValidationError) as exc:
                error = exc if isinstance(exc, KVMCloneError) else HostError(name, str(exc))
                return HostListing(name, None, error)
            if status is not None:
                inventory = replace(
                    inventory, vms=tuple(v for v in inventory.vms if v.state is status)
                )
            return HostListing(name, inventory)

        return list(await asyncio.gather(*(one(n) for n in hosts)))

    async def close(self) -> None:
        """Close every connection."""
        tasks, self._hosts = self._hosts, {}
        self._trackers.clear()
        for task in tasks.values():
            if not task.done():
                task.cancel()
        for task in tasks.values():
            try:
                host = await task
            except (asyncio.CancelledError, Exception):
                continue
            try:
                await host.close()
            except (LibvirtError, OSError):
                continue
