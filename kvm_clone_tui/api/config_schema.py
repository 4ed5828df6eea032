"""The configuration's schema: one frozen dataclass per section, every setting validated.

Each setting is a dataclass field whose metadata (:func:`config_values.meta`) carries its
converter, which parses and checks a value coming from YAML, the environment or the command
line, and a one-line help text. Building a section with a bad value raises :class:`ConfigError`
naming the setting, so an invalid configuration object cannot exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from kvm_clone_tui.api import config_values as v
from kvm_clone_tui.api.config_values import (
    DEFAULT_LIBVIRT_SOCKET,
    DEFAULT_URI,
    ConfigError,
    meta,
    normalise,
    parse_bandwidth,
    settings,
    socket_from_uri,
)
from kvm_clone_tui.api.validation import (
    ValidationError,
    parse_host_spec,
    validate_host_name,
    validate_pool_name,
    validate_user_name,
)

HostKeyPolicy = Literal["strict", "accept-new"]
CompressMode = Literal["auto", "on", "off"]
TransferMode = Literal["auto", "direct", "relay"]
SyncMode = Literal["auto", "bitmap", "hash"]
HOST_KEY_POLICIES: tuple[str, ...] = get_args(HostKeyPolicy)
#: Other accepted names: the original kvm-clone's ``auto_add`` (recorded keys for unknown hosts).
HOST_KEY_POLICY_ALIASES = {
    "auto_add": (
        "accept-new",
        "ssh.host_key_policy auto_add (the original kvm-clone's name) means accept-new: keys of "
        "new hosts are recorded, changed keys are still refused",
    )
}
COMPRESS_MODES: tuple[str, ...] = get_args(CompressMode)
TRANSFER_MODES: tuple[str, ...] = get_args(TransferMode)
SYNC_MODES: tuple[str, ...] = get_args(SyncMode)
MAX_PARALLEL = 16
MAX_CONNECT_RETRIES = 10


def _host_table(value: object) -> dict[str, HostConfig]:
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping of host names to settings (got {value!r})")
    for name, host in value.items():
        validate_host_name(v.string(name))
        if not isinstance(host, HostConfig):
            raise ValueError(f"the settings of {name!r} must be a HostConfig (got {host!r})")
    return dict(value)


# -- the sections --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostConfig:
    """Settings for one host, keyed in ``hosts:`` by the name used on the command line."""

    address: str | None = field(
        default=None,
        metadata=meta(
            v.bare_host,
            "connect here instead of the name (like ssh HostName)",
            nullable=True,
            example="192.0.2.10",
        ),
    )
    user: str | None = field(
        default=None,
        metadata=meta(v.checked(validate_user_name), "SSH user", nullable=True, example="root"),
    )
    port: int | None = field(
        default=None, metadata=meta(v.integer(1, 65535), "SSH port", nullable=True, example=22)
    )
    uri: str = field(
        default=DEFAULT_URI,
        metadata=meta(
            v.libvirt_uri,
            f"libvirt URI on the host ({DEFAULT_URI}; qemu:///session is not supported)",
            example=DEFAULT_URI,
        ),
    )
    libvirt_socket: str | None = field(
        default=None,
        metadata=meta(
            v.remote_path,
            "libvirtd socket on the host, forwarded over SSH (default: the one uri implies, "
            f"{DEFAULT_LIBVIRT_SOCKET} for {DEFAULT_URI})",
            nullable=True,
            example=DEFAULT_LIBVIRT_SOCKET,
        ),
    )
    default_pool: str = field(
        default="default",
        metadata=meta(
            v.checked(validate_pool_name),
            "storage pool that clones land in on this host",
            example="default",
        ),
    )
    reach_address: str | None = field(
        default=None,
        metadata=meta(
            v.checked(validate_host_name),
            "[user@]address[:port] other hosts use to reach this one (direct host-to-host copies)",
            nullable=True,
            example="10.0.0.10",
        ),
    )
    ssh_config_host: str | None = field(
        default=None,
        metadata=meta(
            v.bare_host, "alias to look up in the ssh config", nullable=True, example="alpha"
        ),
    )

    def __post_init__(self) -> None:
        normalise(self)

    @property
    def socket_path(self) -> str:
        """The libvirtd socket to forward: ``libvirt_socket``, else the one ``uri`` implies."""
        return self.libvirt_socket or socket_from_uri(self.uri)


@dataclass(frozen=True)
class SSHConfig:
    """How kvm-clone connects to hosts."""

    config_file: str = field(
        default="~/.ssh/config",
        metadata=meta(
            v.local_path(empty_allowed=True),
            "OpenSSH client config honoured (Host, HostName, Port, User, IdentityFile, ProxyJump); "
            '"" for none',
        ),
    )
    known_hosts: str = field(
        default="~/.ssh/known_hosts",
        metadata=meta(
            v.local_path(empty_allowed=False),
            "known_hosts file that host keys are checked against (always checked)",
        ),
    )
    host_key_policy: HostKeyPolicy = field(
        default="strict",
        metadata=meta(
            v.choice(*HOST_KEY_POLICIES, aliases=HOST_KEY_POLICY_ALIASES),
            "strict: refuse unknown host keys; accept-new: record a new host's key, refuse "
            "changed ones (auto_add, the original kvm-clone's name, means accept-new)",
        ),
    )
    user: str | None = field(
        default=None,
        metadata=meta(
            v.checked(validate_user_name),
            "SSH user for hosts whose entry and ssh config name none (default: the current "
            "user); the order is: user@host or hosts.NAME.user, ssh config User, this",
            nullable=True,
        ),
    )
    key_path: str = field(
        default="",
        metadata=meta(
            v.local_path(empty_allowed=True),
            "an identity file to offer after the ssh config's IdentityFile ones (with it, "
            'OpenSSH\'s default ~/.ssh/id_* files are not tried, as with ssh -i); "" for none',
        ),
    )
    connect_timeout: float = field(
        default=10,
        metadata=meta(v.seconds(zero_allowed=False), "seconds to wait for a connection (> 0)"),
    )
    keepalive_interval: float = field(
        default=15,
        metadata=meta(v.seconds(zero_allowed=True), "seconds between SSH keepalives (0 = off)"),
    )
    connect_retries: int = field(
        default=3,
        metadata=meta(
            v.integer(0, MAX_CONNECT_RETRIES),
            "retries after a transient connection failure, after 1 s, 2 s, 4 s, ...",
        ),
    )
    agent_forwarding: bool = field(
        default=True,
        metadata=meta(v.boolean, "forward the SSH agent (needed for direct host-to-host copies)"),
    )

    def __post_init__(self) -> None:
        normalise(self)

    @property
    def config_file_path(self) -> Path | None:
        """The OpenSSH client config to honour, ``~`` expanded; None when disabled."""
        return Path(self.config_file).expanduser() if self.config_file else None

    @property
    def known_hosts_path(self) -> Path:
        """The known_hosts file, ``~`` expanded."""
        return Path(self.known_hosts).expanduser()

    @property
    def retry_delays(self) -> tuple[float, ...]:
        """Seconds to wait before each retry: 1, 2, 4, ..."""
        return tuple(float(2**attempt) for attempt in range(self.connect_retries))


@dataclass(frozen=True)
class CloneConfig:
    """Defaults for ``kvm-clone clone`` options."""

    pool: str | None = field(
        default=None,
        metadata=meta(
            v.checked(validate_pool_name),
            "destination pool; null = the host's default_pool",
            nullable=True,
        ),
    )
    verify: bool = field(
        default=True, metadata=meta(v.boolean, "check that what arrived is what left")
    )
    compress: CompressMode = field(
        default="auto",
        metadata=meta(v.choice(*COMPRESS_MODES), "compress data in transit: auto | on | off"),
    )
    transfer: TransferMode = field(
        default="auto",
        metadata=meta(
            v.choice(*TRANSFER_MODES), "auto | direct (host to host) | relay (through this machine)"
        ),
    )
    parallel: int = field(
        default=2,
        metadata=meta(v.integer(1, MAX_PARALLEL), f"disks copied at once, 1..{MAX_PARALLEL}"),
    )
    bandwidth_limit: str | None = field(
        default=None,
        metadata=meta(
            v.bandwidth,
            "bytes per second, K/M/G suffixes (binary), e.g. 100M; null = unlimited",
            nullable=True,
        ),
    )
    preserve_mac: bool = field(
        default=False, metadata=meta(v.boolean, "keep the source's MAC addresses")
    )
    start: bool = field(
        default=False, metadata=meta(v.boolean, "start the clone once it is defined")
    )
    no_progress_timeout: float = field(
        default=120,
        metadata=meta(
            v.seconds(zero_allowed=False), "seconds without progress before a copy is aborted"
        ),
    )

    def __post_init__(self) -> None:
        normalise(self)

    @property
    def bandwidth_limit_bytes(self) -> int | None:
        """``bandwidth_limit`` in bytes per second, None when unlimited."""
        return None if self.bandwidth_limit is None else parse_bandwidth(self.bandwidth_limit)


@dataclass(frozen=True)
class SyncConfig:
    """Defaults for ``kvm-clone sync``."""

    mode: SyncMode = field(
        default="auto",
        metadata=meta(
            v.choice(*SYNC_MODES),
            "auto | bitmap (only blocks the source's dirty bitmap marks move) | hash "
            "(both hosts hash blocks, only differing blocks move); auto: bitmap when valid",
        ),
    )

    def __post_init__(self) -> None:
        normalise(self)


SECTIONS: dict[str, type[SSHConfig | CloneConfig | SyncConfig]] = {
    "ssh": SSHConfig,
    "clone": CloneConfig,
    "sync": SyncConfig,
}
TOP_LEVEL_KEYS = ("default_hosts", "hosts", *SECTIONS)


@dataclass(frozen=True)
class Config:
    """The whole configuration. ``sources`` maps dotted keys set from the environment to the
    variable that set them (not part of equality)."""

    default_hosts: tuple[str, ...] = field(
        default=(),
        metadata=meta(
            v.host_list, "hosts the TUI opens when none are given ([user@]host[:port] or alias)"
        ),
    )
    hosts: Mapping[str, HostConfig] = field(
        default_factory=dict,
        metadata=meta(_host_table, "per-host settings, keyed by the name used on the command line"),
    )
    ssh: SSHConfig = field(default_factory=SSHConfig)
    clone: CloneConfig = field(default_factory=CloneConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        normalise(self)
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"must be a {cls.__name__}", key=name)

    def host(self, name: str) -> HostConfig:
        """The settings for ``name``: its entry, else the entry of its host part (``alpha`` for
        ``root@alpha:22``), else the defaults."""
        if name in self.hosts:
            return self.hosts[name]
        try:
            bare = parse_host_spec(name).host
        except ValidationError:
            return HostConfig()
        return self.hosts.get(bare, HostConfig())

    def pool_for(self, host: str) -> str:
        """The pool clones land in on ``host``: ``clone.pool``, else the host's default_pool."""
        return self.clone.pool or self.host(host).default_pool

    def to_dict(self, *, defaults: bool = True) -> dict[str, Any]:
        """Plain (YAML/JSON-ready) values in schema order; ``defaults=False`` keeps only what
        differs from the defaults (host entries are kept even when empty)."""
        out: dict[str, Any] = {}
        if defaults or self.default_hosts:
            out["default_hosts"] = list(self.default_hosts)
        hosts = {name: section_dict(host, defaults=defaults) for name, host in self.hosts.items()}
        if defaults or hosts:
            out["hosts"] = hosts
        for name in SECTIONS:
            values = section_dict(getattr(self, name), defaults=defaults)
            if defaults or values:
                out[name] = values
        return out


def section_dict(section: object, *, defaults: bool = True) -> dict[str, Any]:
    """A section's settings as plain values, optionally only those that differ from defaults."""
    out: dict[str, Any] = {}
    for f in settings(section):
        value = getattr(section, f.name)
        if defaults or value != f.default:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
