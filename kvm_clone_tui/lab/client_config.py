"""The kvm-clone configuration that points at a lab: its hosts, ssh_config and known_hosts."""

from __future__ import annotations

from collections.abc import Sequence

from kvm_clone_tui.api.config import Config, SSHConfig, save_config
from kvm_clone_tui.lab.layout import LabHost, LabLayout


def lab_client_config(layout: LabLayout, hosts: Sequence[LabHost]) -> Config:
    """A config whose default hosts are the lab's, reached with the lab's strict SSH files."""
    return Config(
        default_hosts=tuple(h.name for h in hosts),
        ssh=SSHConfig(config_file=str(layout.ssh_config), known_hosts=str(layout.known_hosts)),
    )


def write_client_config(layout: LabLayout, hosts: Sequence[LabHost]) -> None:
    """Write ``<lab>/config.yaml``; use it with ``KVM_CLONE_CONFIG=<lab>/config.yaml``."""
    save_config(lab_client_config(layout, hosts), layout.client_config)
