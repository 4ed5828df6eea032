"""The lab's naming, addressing and file layout rules (pure functions, no lab needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvm_clone_tui.lab.layout import (
    LabError,
    LabHost,
    LabLayout,
    LabState,
    plan_hosts,
    validate_host_name,
)
from kvm_clone_tui.lab.ssh_files import known_hosts_text, ssh_config_text


def test_plan_hosts_names_and_consecutive_loopback_addresses() -> None:
    hosts = plan_hosts(3)
    assert [(h.name, h.address, h.port) for h in hosts] == [
        ("alpha", "127.0.0.2", 22),
        ("beta", "127.0.0.3", 22),
        ("gamma", "127.0.0.4", 22),
    ]


@pytest.mark.parametrize(
    ("count", "base"),
    [(0, "127.0.0.2"), (9, "127.0.0.2"), (2, "10.0.0.1"), (2, "127.255.255.255"), (1, "not-an-ip")],
)
def test_plan_hosts_refuses_bad_counts_and_non_loopback(count: int, base: str) -> None:
    with pytest.raises(LabError):
        plan_hosts(count, base)


@pytest.mark.parametrize(
    "name", ["-oProxyCommand=x", "a;b", "../etc", "Alpha", "", "a b", "x" * 40]
)
def test_hostile_host_names_are_refused(name: str) -> None:
    with pytest.raises(LabError):
        validate_host_name(name)


@pytest.mark.parametrize("root", ["/run/lab", "/var/lib/libvirt/x", "/root/.ssh", "/etc/libvirt"])
def test_lab_dir_under_a_private_mount_is_refused(root: str) -> None:
    with pytest.raises(LabError, match="mounts privately"):
        LabLayout(Path(root))


def test_host_path_maps_inside_paths_to_the_host_dir(tmp_path: Path) -> None:
    layout = LabLayout(tmp_path)
    assert layout.host_path("beta", "/var/lib/libvirt/images/a.qcow2") == (
        tmp_path / "hosts" / "beta" / "lib" / "images" / "a.qcow2"
    )
    assert layout.host_path("beta", "/run") == tmp_path / "hosts" / "beta" / "run"
    with pytest.raises(LabError):
        layout.host_path("beta", "/etc/passwd")
    with pytest.raises(LabError):
        layout.host_path("../x", "/run")


def test_known_hosts_lines_cover_name_and_address_and_port() -> None:
    text = known_hosts_text(
        [
            (LabHost("alpha", "127.0.0.2"), "ssh-ed25519 AAAAkey1 lab-alpha"),
            (LabHost("beta", "127.0.0.3", 2222), "ssh-ed25519 AAAAkey2 lab-beta"),
        ]
    )
    assert text.splitlines() == [
        "alpha,127.0.0.2 ssh-ed25519 AAAAkey1",
        "[beta]:2222,[127.0.0.3]:2222 ssh-ed25519 AAAAkey2",
    ]


def test_ssh_config_is_strict(tmp_path: Path) -> None:
    text = ssh_config_text(LabLayout(tmp_path), [LabHost("alpha", "127.0.0.2")])
    assert "StrictHostKeyChecking yes" in text
    assert f"UserKnownHostsFile {tmp_path / 'known_hosts'}" in text
    assert "StrictHostKeyChecking no" not in text


def test_state_round_trips(tmp_path: Path) -> None:
    layout = LabLayout(tmp_path)
    assert layout.load_state() is None
    state = LabState(hosts=plan_hosts(2), domain_type="kvm", sample_vms=False)
    layout.save_state(state)
    assert layout.load_state() == state
