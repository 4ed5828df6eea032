"""The hosts registry: one connection and one live inventory per host, opened on first use.

:class:`HostRegistry` implements the engine's :class:`~kvm_clone_tui.engine.host_port.Hosts`
port; the API facade builds one from its configuration and passes it to the engine's
operations (plan, clone, sync, resume, revert), which never see the facade.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from pathlib import Path

from kvm_clone_tui.api.config import Config
from kvm_clone_tui.api.errors import LibvirtError
from kvm_clone_tui.api.models import HostInventory
from kvm_clone_tui.api.validation import parse_host_spec
from kvm_clone_tui.engine.host_port import Host, Hosts
from kvm_clone_tui.engine.hosts import HostTarget, SSHHost
from kvm_clone_tui.engine.inventory import InventoryTracker
from kvm_clone_tui.engine.ssh import SSHSettings


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
        client_keys=(Path(ssh.key_path).expanduser(),) if ssh.key_path else (),
        default_user=ssh.user,
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


class HostRegistry:
    """Connections to hosts, opened on first use and shared by every caller until closed."""

    def __init__(self, config: Config, settings: SSHSettings) -> None:
        self._config = config
        self.settings = settings
        self._hosts: dict[str, asyncio.Task[SSHHost]] = {}
        self._trackers: dict[str, InventoryTracker] = {}

    @property
    def config(self) -> Config:
        """The configuration hosts are reached with."""
        return self._config

    @property
    def agent_forwarding(self) -> bool:
        """Whether connections forward the local SSH agent."""
        return self.settings.agent_forwarding

    def __len__(self) -> int:
        """How many connections are open or being opened."""
        return len(self._hosts)

    @staticmethod
    def _is_dropped(task: asyncio.Task[SSHHost] | None) -> bool:
        """True for a connection that was made and has closed since."""
        if task is None or not task.done() or task.cancelled() or task.exception():
            return False
        return task.result().is_closed()

    async def host(self, name: str) -> Host:
        """The connected host ``name`` (one SSH login per host, shared by all callers)."""
        task = self._hosts.get(name)
        if self._is_dropped(task):  # the link dropped: log in again
            assert task is not None
            self._trackers.pop(name, None)
            with contextlib.suppress(LibvirtError, OSError):
                await task.result().libvirt.close()
            task = None
        if task is None or (task.done() and (task.cancelled() or task.exception())):
            target = host_target(self._config, name)
            task = asyncio.get_running_loop().create_task(SSHHost.connect(target, self.settings))
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
        known = self._trackers.get(name)
        tracker = await self.tracker(name)
        if tracker is known and (fresh or tracker.inventory is None):
            return await tracker.refresh()  # a new tracker has just read the host
        assert tracker.inventory is not None
        return tracker.inventory

    async def close_host(self, name: str) -> None:
        """Close the connection to one host (it reconnects on next use)."""
        task = self._hosts.pop(name, None)
        self._trackers.pop(name, None)
        if task is None:
            return
        if not task.done():
            task.cancel()
        try:
            host = await task
        except (asyncio.CancelledError, Exception):
            return
        with contextlib.suppress(LibvirtError, OSError):
            await host.close()

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


def _conforms(registry: HostRegistry) -> Hosts:
    return registry  # mypy checks here that HostRegistry implements the port
