"""Where a lab lives on disk and which simulated hosts it has.

A lab is a state directory holding, per simulated host, the directories that are bind-mounted
over that host's private ``/run``, ``/var/lib/libvirt``, ``/etc/libvirt``, ``/var/log/libvirt``,
``/var/cache/libvirt`` and ``/root/.ssh``, plus the operator's SSH files (key, ``ssh_config``,
``known_hosts``) that reach the hosts with strict host-key checking.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import platformdirs

DEFAULT_HOST_NAMES = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
DEFAULT_BASE_ADDRESS = "127.0.0.2"
DEFAULT_SSH_PORT = 22
LAB_DIR_ENV = "KVM_CLONE_LAB_DIR"
LAB_CACHE_ENV = "KVM_CLONE_LAB_CACHE"

#: The directories each host gets privately: mount point -> name of its folder in the host dir.
PRIVATE_MOUNTS: dict[str, str] = {
    "/run": "run",
    "/var/lib/libvirt": "lib",
    "/etc/libvirt": "etc",
    "/var/log/libvirt": "log",
    "/var/cache/libvirt": "cache",
    "/root/.ssh": "ssh",
}

_HOST_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


class LabError(RuntimeError):
    """A lab operation failed; the message says what to do about it."""


def default_state_dir() -> Path:
    """The lab's state directory: ``$KVM_CLONE_LAB_DIR`` or the user state dir."""
    env = os.environ.get(LAB_DIR_ENV)
    if env:
        return Path(env).absolute()
    return platformdirs.user_state_path("kvm-clone") / "lab"


def default_cache_dir() -> Path:
    """Where downloaded guest kernels and built initramfs images are kept between labs."""
    env = os.environ.get(LAB_CACHE_ENV)
    if env:
        return Path(env).absolute()
    return platformdirs.user_cache_path("kvm-clone") / "lab"


@dataclass(frozen=True)
class LabHost:
    """One simulated host: its name, its loopback address and its sshd port."""

    name: str
    address: str
    port: int = DEFAULT_SSH_PORT

    @property
    def known_hosts_patterns(self) -> str:
        """The host patterns a ``known_hosts`` line needs for this host."""
        if self.port == 22:
            return f"{self.name},{self.address}"
        return f"[{self.name}]:{self.port},[{self.address}]:{self.port}"


def validate_host_name(name: str) -> str:
    """Refuse lab host names that could be mistaken for options, paths or shell syntax."""
    if not _HOST_NAME_RE.match(name):
        raise LabError(
            f"invalid lab host name {name!r}: use lower-case letters, digits and '-', "
            "starting with a letter (at most 31 characters)"
        )
    return name


def plan_hosts(
    count: int, base_address: str = DEFAULT_BASE_ADDRESS, port: int = DEFAULT_SSH_PORT
) -> list[LabHost]:
    """Name ``count`` hosts (alpha, beta, ...) on consecutive loopback addresses."""
    if not 1 <= count <= len(DEFAULT_HOST_NAMES):
        raise LabError(f"a lab has 1 to {len(DEFAULT_HOST_NAMES)} hosts, not {count}")
    try:
        first = ipaddress.IPv4Address(base_address)
    except ValueError as exc:
        raise LabError(f"invalid base address {base_address!r}: {exc}") from exc
    if not first.is_loopback or not (first + count - 1).is_loopback:
        raise LabError(
            f"lab hosts live on loopback addresses (127.0.0.0/8); {base_address!r} with "
            f"{count} hosts leaves that range"
        )
    return [
        LabHost(name=DEFAULT_HOST_NAMES[i], address=str(first + i), port=port) for i in range(count)
    ]


@dataclass
class LabState:
    """What ``lab up`` recorded: the hosts and the accelerator the guests use."""

    hosts: list[LabHost]
    domain_type: str = "qemu"
    sample_vms: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialise for ``lab.json``."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> LabState:
        """Parse ``lab.json``."""
        raw = json.loads(text)
        return cls(
            hosts=[LabHost(**h) for h in raw["hosts"]],
            domain_type=raw.get("domain_type", "qemu"),
            sample_vms=raw.get("sample_vms", True),
            extra=raw.get("extra", {}),
        )


@dataclass(frozen=True)
class LabLayout:
    """Paths of one lab's state directory."""

    root: Path

    def __post_init__(self) -> None:
        resolved = self.root.resolve()
        for mount_point in PRIVATE_MOUNTS:
            mp = Path(mount_point)
            if resolved == mp or mp in resolved.parents:
                raise LabError(
                    f"the lab directory {resolved} lies under {mount_point}, which every lab "
                    f"host mounts privately; choose another directory (${LAB_DIR_ENV})"
                )

    @property
    def state_file(self) -> Path:
        """``lab.json``: hosts and accelerator of the running lab."""
        return self.root / "lab.json"

    @property
    def operator_key(self) -> Path:
        """The operator's private key (ed25519) authorised on every lab host."""
        return self.root / "id_ed25519"

    @property
    def ssh_config(self) -> Path:
        """An OpenSSH client config: ``ssh -F <this> alpha`` reaches host alpha."""
        return self.root / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        """The lab hosts' public keys, for strict host-key checking."""
        return self.root / "known_hosts"

    @property
    def client_config(self) -> Path:
        """A kvm-clone ``config.yaml`` that points at the lab's hosts."""
        return self.root / "config.yaml"

    def host_dir(self, name: str) -> Path:
        """The folder holding everything private to host ``name``."""
        return self.root / "hosts" / validate_host_name(name)

    def host_path(self, name: str, inside: str) -> Path:
        """Map a path as seen inside host ``name`` (e.g. /var/lib/libvirt/images/x) to ours."""
        path = Path(inside)
        for mount_point, folder in PRIVATE_MOUNTS.items():
            mp = Path(mount_point)
            if path == mp or mp in path.parents:
                return self.host_dir(name) / folder / path.relative_to(mp)
        raise LabError(f"{inside} is not inside a private directory of lab host {name}")

    def load_state(self) -> LabState | None:
        """The recorded lab state, or None when no lab was brought up here."""
        try:
            return LabState.from_json(self.state_file.read_text())
        except FileNotFoundError:
            return None

    def save_state(self, state: LabState) -> None:
        """Record the lab state atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(state.to_json())
        tmp.replace(self.state_file)
