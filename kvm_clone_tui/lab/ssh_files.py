"""The operator's SSH files for a lab: a key, ``known_hosts`` and an ``ssh_config``."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from kvm_clone_tui.lab.layout import LabHost, LabLayout


def ensure_operator_key(layout: LabLayout) -> str:
    """Create the operator key once; return its public half."""
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.root.chmod(0o700)
    key = layout.operator_key
    if not key.exists():
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "kvm-clone-lab-operator",
                "-f",
                str(key),
            ],
            check=True,
        )
    return key.with_suffix(".pub").read_text().strip()


def known_hosts_text(hosts: Sequence[tuple[LabHost, str]]) -> str:
    """``known_hosts`` lines for (host, public key line) pairs, by name and by address."""
    lines = []
    for host, pubkey in hosts:
        key_type, key_data = pubkey.split()[:2]
        lines.append(f"{host.known_hosts_patterns} {key_type} {key_data}")
    return "\n".join(lines) + "\n"


def ssh_config_text(layout: LabLayout, hosts: Sequence[LabHost]) -> str:
    """An ``ssh_config`` that reaches each lab host by name with strict host-key checking."""
    blocks = [
        "# Written by `kvm-clone lab up`: use as `ssh -F <this file> alpha`.",
        "# Host keys are checked strictly against the lab's own known_hosts.",
    ]
    for host in hosts:
        blocks += [
            f"Host {host.name}",
            f"    HostName {host.address}",
            f"    Port {host.port}",
            "    User root",
            f"    IdentityFile {layout.operator_key}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {layout.known_hosts}",
            "    StrictHostKeyChecking yes",
            "    ForwardAgent no",
            "    BatchMode yes",
            "",
        ]
    return "\n".join(blocks)


def write_operator_files(layout: LabLayout, hosts: Sequence[tuple[LabHost, str]]) -> None:
    """Write the lab's ``known_hosts`` and ``ssh_config`` for the operator."""
    layout.known_hosts.write_text(known_hosts_text(hosts))
    layout.ssh_config.write_text(ssh_config_text(layout, [h for h, _ in hosts]))
