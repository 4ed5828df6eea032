"""SSH connections to hosts: OpenSSH config, verified host keys, retries, fast ciphers.

One :class:`asyncssh.SSHClientConnection` per host serves everything (commands, the libvirt
socket, disk streams). Host keys are always verified against a known_hosts file: ``strict``
refuses unknown and changed keys, ``accept-new`` records an unknown key and still refuses a
changed one. Nothing here ever accepts any key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import asyncssh

from kvm_clone_tui.api.errors import (
    AuthenticationError,
    HostKeyError,
    HostUnreachableError,
)
from kvm_clone_tui.api.validation import HostSpec, parse_host_spec

log = logging.getLogger(__name__)

HostKeyPolicy = Literal["strict", "accept-new"]

#: AES-GCM first where the CPU has AES instructions: ~300 MiB/s vs ~180 MiB/s for ChaCha20 on
#: one loopback stream on this class of machine (see docs/decisions.md).
_AES_FIRST = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
_CHACHA_FIRST = ("chacha20-poly1305@openssh.com", *_AES_FIRST[:2], *_AES_FIRST[3:])
RETRY_DELAYS = (1.0, 2.0, 4.0)


def cpu_has_aes() -> bool:
    """True when /proc/cpuinfo lists the ``aes`` flag."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return any(
                line.startswith("flags") and " aes" in line.split(":", 1)[1] + " "
                for line in cpuinfo
            )
    except OSError:
        return False


def preferred_ciphers() -> tuple[str, ...]:
    """The cipher preference list for this machine."""
    return _AES_FIRST if cpu_has_aes() else _CHACHA_FIRST


@dataclass(frozen=True)
class SSHSettings:
    """How to reach hosts; built from the ``ssh`` section of the configuration."""

    config_files: tuple[Path, ...] = ()
    known_hosts: Path = field(default_factory=lambda: Path("~/.ssh/known_hosts").expanduser())
    host_key_policy: HostKeyPolicy = "strict"
    connect_timeout: float = 10.0
    keepalive_interval: float = 15.0
    retry_delays: tuple[float, ...] = RETRY_DELAYS
    agent_forwarding: bool = True
    client_keys: tuple[Path, ...] = ()  # extra identity files, tried after the ssh config's
    default_user: str | None = None  # when neither the host spec nor the ssh config names one


class _VerifyingClient(asyncssh.SSHClient):
    """Decides on keys that known_hosts does not already trust, per the host-key policy."""

    def __init__(self, settings: SSHSettings) -> None:
        self.settings = settings
        self.problem: tuple[str, str, str] | None = None  # (kind, host, fingerprint)

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        path = str(self.settings.known_hosts)
        fingerprint = key.get_fingerprint()
        known_port = None if port == 22 else port
        trusted: Sequence[asyncssh.SSHKey] = []
        if os.path.exists(path):
            trusted = asyncssh.match_known_hosts(path, host, addr, known_port)[0]
        if trusted:
            self.problem = ("changed", host, fingerprint)
            return False
        if self.settings.host_key_policy == "accept-new":
            _record_host_key(self.settings.known_hosts, host, known_port, key)
            log.warning("recorded new host key for %s (%s) in %s", host, fingerprint, path)
            return True
        self.problem = ("unknown", host, fingerprint)
        return False


def _record_host_key(path: Path, host: str, port: int | None, key: asyncssh.SSHKey) -> None:
    """Append ``host key`` to known_hosts (OpenSSH format, ``[host]:port`` for other ports)."""
    pattern = host if port is None else f"[{host}]:{port}"
    line = f"{pattern} {key.export_public_key('openssh').decode().strip()}\n"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with path.open("a") as f:
        f.write(line)


def _host_key_error(spec: HostSpec, problem: tuple[str, str, str], settings: SSHSettings) -> str:
    kind, host, fingerprint = problem
    known = settings.known_hosts
    if kind == "changed":
        return (
            f"the host key of {host} has CHANGED (now {fingerprint}); this may be an attack. "
            f"If the host was reinstalled, verify the new fingerprint on its console, then run "
            f"`ssh-keygen -R {host} -f {known}` and connect again"
        )
    return (
        f"the host key of {host} ({fingerprint}) is not in {known}. Verify the fingerprint on "
        f"the host (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), then add it with "
        f"`ssh {spec.original}` once, or set ssh.host_key_policy to accept-new "
        "(KVM_CLONE_SSH_HOST_KEY_POLICY=accept-new)"
    )


async def _options(spec: HostSpec, settings: SSHSettings) -> asyncssh.SSHClientConnectionOptions:
    """Connection options from the OpenSSH config, with our overrides on top."""
    config = [str(p) for p in settings.config_files if p.exists()]
    base = await asyncssh.SSHClientConnectionOptions.construct(
        config=config, host=spec.host, port=spec.port if spec.port is not None else ()
    )
    kwargs: dict[str, object] = {
        "known_hosts": _known_hosts_files(base, settings),
        "encryption_algs": list(preferred_ciphers()),
        "connect_timeout": settings.connect_timeout,
        "keepalive_interval": settings.keepalive_interval,
        "keepalive_count_max": 3,
        "agent_forwarding": settings.agent_forwarding,
    }
    if spec.user:
        kwargs["username"] = spec.user
    elif settings.default_user and base.config.get("User") is None:
        kwargs["username"] = settings.default_user  # ssh config > environment > current user
    if settings.client_keys:  # after the ssh config's own, as `ssh -i` adds to them
        from_config = [str(p) for p in base.config.get("IdentityFile", ())]
        kwargs["client_keys"] = [*from_config, *(str(p) for p in settings.client_keys)]
    options: asyncssh.SSHClientConnectionOptions = (
        await asyncssh.SSHClientConnectionOptions.construct(
            base,
            config=config,
            host=spec.host,
            port=spec.port if spec.port is not None else (),
            **kwargs,
        )
    )
    return options


def _known_hosts_files(
    base: asyncssh.SSHClientConnectionOptions, settings: SSHSettings
) -> list[str]:
    """known_hosts from the ssh config when it names real files, else ours; never none."""
    from_config = base.known_hosts if isinstance(base.known_hosts, list) else []
    usable = [str(Path(p).expanduser()) for p in from_config if p not in ("/dev/null", "none")]
    if usable and settings.known_hosts == SSHSettings().known_hosts:
        return usable
    return [str(settings.known_hosts)]


async def _connect_once(
    spec: HostSpec, settings: SSHSettings, tunnel: asyncssh.SSHClientConnection | None
) -> asyncssh.SSHClientConnection:
    options = await _options(spec, settings)
    jump = None
    if tunnel is None and isinstance(options.tunnel, str) and options.tunnel.lower() != "none":
        jump = await _connect_chain(options.tunnel, settings)
        tunnel = jump
    client = _VerifyingClient(settings)
    try:
        conn: asyncssh.SSHClientConnection = await asyncssh.connect(
            spec.host,
            options=options,
            tunnel=tunnel if tunnel is not None else (),
            client_factory=lambda: client,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        if jump is not None:
            jump.close()
        if client.problem is None:
            raise HostKeyError(spec.original, str(exc)) from exc
        raise HostKeyError(spec.original, _host_key_error(spec, client.problem, settings)) from exc
    except BaseException:
        if jump is not None:
            jump.close()
        raise
    if jump is not None:
        # Close the jump host's connection together with the target's.
        conn_closed = conn.wait_closed()

        async def _close_jump() -> None:
            with contextlib.suppress(Exception):
                await conn_closed
            jump.close()

        asyncio.get_running_loop().create_task(_close_jump())
    return conn


async def _connect_chain(proxy_jump: str, settings: SSHSettings) -> asyncssh.SSHClientConnection:
    """Connect through a ProxyJump list (``a,b``): each hop through the previous one."""
    conn: asyncssh.SSHClientConnection | None = None
    for hop in proxy_jump.split(","):
        hop_spec = parse_host_spec(hop.strip().removeprefix("ssh://"))
        conn = await _connect_once(hop_spec, settings, conn)
    assert conn is not None
    return conn


async def connect(
    host: str | HostSpec, settings: SSHSettings, *, retry_delays: Sequence[float] | None = None
) -> asyncssh.SSHClientConnection:
    """Open a verified SSH connection to ``host`` (``[user@]host[:port]`` or an ssh alias).

    Transient failures (refused, unreachable, timed out, dropped) are retried with backoff;
    authentication and host-key failures are not.
    """
    spec = host if isinstance(host, HostSpec) else parse_host_spec(host)
    delays = list(settings.retry_delays if retry_delays is None else retry_delays)
    while True:
        try:
            return await _connect_once(spec, settings, None)
        except HostKeyError:
            raise
        except asyncssh.PermissionDenied as exc:
            raise AuthenticationError(
                spec.original,
                f"authentication failed ({exc.reason}); check the user and that your key is in "
                "your SSH agent or named by IdentityFile in your ssh config",
            ) from exc
        except socket.gaierror as exc:
            raise HostUnreachableError(
                spec.original, f"cannot resolve {spec.host!r}: {exc.strerror}"
            ) from exc
        except (OSError, asyncio.TimeoutError, asyncssh.DisconnectError) as exc:
            reason = _describe(exc)
            if not delays:
                raise HostUnreachableError(spec.original, reason) from exc
            delay = delays.pop(0)
            log.info(
                "connecting to %s failed (%s); retrying in %.0f s", spec.original, reason, delay
            )
            await asyncio.sleep(delay)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, asyncssh.DisconnectError):
        return f"connection lost: {exc.reason}"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
