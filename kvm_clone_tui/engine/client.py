"""How the client facade reaches a host: SSH settings and targets from the configuration.

:class:`~kvm_clone_tui.api.client.KVMCloneClient` lives in the API layer (it imports the host
layers only when it reaches a host); it is re-exported here for the engine modules that take it.
"""

from __future__ import annotations

from dataclasses import replace

from kvm_clone_tui.api.client import KVMCloneClient
from kvm_clone_tui.api.config import Config
from kvm_clone_tui.api.models import HostListing
from kvm_clone_tui.api.validation import parse_host_spec
from kvm_clone_tui.engine.hosts import Host, HostTarget
from kvm_clone_tui.engine.ssh import SSHSettings

__all__ = ["HostListing", "KVMCloneClient", "host_target", "read_domain_xml", "ssh_settings"]


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


async def read_domain_xml(host: Host, vm: str, *, inactive: bool = False) -> str:
    """The domain XML of VM ``vm`` on ``host`` (the live definition unless ``inactive``)."""
    import libvirt  # the engine owns libvirt; callers only see text

    flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
    xml: str = await host.libvirt.call(lambda c: c.lookupByName(vm).XMLDesc(flags))
    return xml
