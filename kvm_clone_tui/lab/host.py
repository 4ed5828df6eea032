"""One simulated host: a private mount namespace with its own libvirtd, virtlogd and sshd."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from kvm_clone_tui.lab.layout import PRIVATE_MOUNTS, LabError, LabHost, LabLayout
from kvm_clone_tui.lab.processes import (
    is_running,
    mount_namespace,
    nsenter_argv,
    processes_in_namespace,
    read_pid_file,
    run_in_namespace,
    terminate,
)

DAEMONS = ("libvirtd", "virtlogd", "sshd")
LIBVIRT_URI = "qemu:///system"

# Runs under `unshare --mount --uts --propagation private`: every mount below is private to the
# new namespace and vanishes with its last process. Arguments: host dir, host name, mount pairs.
_BOOT_SCRIPT = r"""
set -eu
host_dir=$1; host_name=$2; shift 2
hostname "$host_name"
while [ $# -gt 0 ]; do
    # A fresh machine may lack a mount point (e.g. /root/.ssh): an empty private one is made.
    [ -d "$2" ] || install -d -m 0700 "$2"
    mount --bind "$host_dir/$1" "$2"
    shift 2
done
# A clean root account: the machine's own shell start-up files (pyenv, prompts...) stay out.
for rc in .bashrc .profile; do
    if [ -e "/root/$rc" ]; then mount --bind "$host_dir/home/$rc" "/root/$rc"; fi
done
mkdir -p /run/libvirt /run/lock
install -d -m 0755 /run/sshd
readlink /proc/self/ns/mnt > "$host_dir/namespace"
virtlogd --daemon --pid-file /run/virtlogd.pid
libvirtd --daemon --pid-file /run/libvirtd.pid
/usr/sbin/sshd -f "$host_dir/sshd_config" -E "$host_dir/sshd.log"
"""

_SSHD_CONFIG = """\
# sshd of lab host {name}: written by `kvm-clone lab up`.
ListenAddress {address}:{port}
HostKey {host_dir}/ssh_host_ed25519_key
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
AllowAgentForwarding yes
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
StreamLocalBindUnlink yes
MaxSessions 64
MaxStartups 64:30:128
ClientAliveInterval 30
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
"""


@dataclass(frozen=True)
class HostStatus:
    """What ``lab status`` reports for one host."""

    name: str
    address: str
    port: int
    daemons: dict[str, int | None]
    ssh_reachable: bool
    vms: dict[str, str]

    @property
    def up(self) -> bool:
        """True when all daemons run and sshd answers."""
        return self.ssh_reachable and all(self.daemons.values())


class LabHostRuntime:
    """Starts, inspects and stops one lab host."""

    def __init__(self, layout: LabLayout, host: LabHost) -> None:
        self.layout = layout
        self.host = host
        self.dir = layout.host_dir(host.name)

    # --- files -------------------------------------------------------------------------------

    def prepare(self, operator_pubkey: str) -> None:
        """Create the host's private directories, libvirt config, sshd config and host key."""
        for folder in PRIVATE_MOUNTS.values():
            (self.dir / folder).mkdir(parents=True, exist_ok=True)
        (self.dir / "ssh").chmod(0o700)
        etc = self.dir / "etc"
        if not (etc / "libvirtd.conf").exists():
            if not Path("/etc/libvirt/libvirtd.conf").exists():
                raise LabError("libvirt is not installed: run `make deps` (apt packages) first")
            shutil.copytree("/etc/libvirt", etc, dirs_exist_ok=True)
            # No autostarted networks: the lab must never touch the machine's interfaces.
            shutil.rmtree(etc / "qemu" / "networks" / "autostart", ignore_errors=True)
            with (etc / "qemu.conf").open("a") as conf:
                conf.write(
                    "\n# kvm-clone lab: /dev/kvm is root-only here, so QEMU runs as root.\n"
                    'user = "root"\ngroup = "root"\n'
                )
        for sub in ("lib/images", "lib/qemu/nvram", "lib/boot", "log/qemu", "home"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "home" / ".bashrc").write_text("# lab host root: nothing here\n")
        (self.dir / "home" / ".profile").write_text(
            '[ -n "$BASH_VERSION" ] && [ -f ~/.bashrc ] && . ~/.bashrc\n'
        )
        key = self.dir / "ssh_host_ed25519_key"
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
                    f"lab-{self.host.name}",
                    "-f",
                    str(key),
                ],
                check=True,
            )
        (self.dir / "sshd_config").write_text(
            _SSHD_CONFIG.format(
                name=self.host.name,
                address=self.host.address,
                port=self.host.port,
                host_dir=self.dir,
            )
        )
        authorized = self.dir / "ssh" / "authorized_keys"
        authorized.write_text(operator_pubkey.strip() + "\n")
        authorized.chmod(0o600)

    def host_public_key(self) -> str:
        """The host's public key line (``ssh-ed25519 AAAA... comment``)."""
        return (self.dir / "ssh_host_ed25519_key.pub").read_text().strip()

    def write_peer_files(self, peers: list[LabHost], known_hosts: str) -> None:
        """Let this host reach the other lab hosts by name, with strict host-key checking."""
        lines = ["# Lab hosts, written by `kvm-clone lab up`."]
        for peer in peers:
            lines += [
                f"Host {peer.name}",
                f"    HostName {peer.address}",
                f"    Port {peer.port}",
                "    User root",
                "    StrictHostKeyChecking yes",
                "",
            ]
        (self.dir / "ssh" / "config").write_text("\n".join(lines))
        (self.dir / "ssh" / "known_hosts").write_text(known_hosts)

    # --- lifecycle ---------------------------------------------------------------------------

    def pid(self, daemon: str) -> int | None:
        """The pid of ``daemon`` when it is running in this host's namespace."""
        pid = read_pid_file(self.dir / "run" / f"{daemon}.pid")
        if pid is None or not is_running(pid):
            return None
        if mount_namespace(pid) != self.namespace():
            return None  # a recycled pid that belongs to someone else
        return pid

    def namespace(self) -> str | None:
        """The mount namespace id recorded when the host started."""
        try:
            return (self.dir / "namespace").read_text().strip() or None
        except FileNotFoundError:
            return None

    def anchor_pid(self) -> int:
        """A pid inside the host's namespace, to enter it with nsenter."""
        for daemon in DAEMONS:
            pid = self.pid(daemon)
            if pid is not None:
                return pid
        raise LabError(f"lab host {self.host.name} is not running: run `kvm-clone lab up`")

    def is_up(self) -> bool:
        """True when all three daemons are running."""
        return all(self.pid(d) is not None for d in DAEMONS)

    def start(self, timeout: float = 60) -> None:
        """Start the namespace and its daemons; harmless when they already run."""
        if self.is_up():
            return
        if any(self.pid(d) for d in DAEMONS) or self._namespace_processes():
            self.stop()  # half up: start over cleanly
        mounts: list[str] = []
        for mount_point, folder in PRIVATE_MOUNTS.items():
            mounts += [folder, mount_point]
        subprocess.run(
            [
                "unshare",
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                _BOOT_SCRIPT,
                "lab-host",
                str(self.dir),
                self.host.name,
                *mounts,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_up() and self._libvirt_answers() and self._ssh_port_open():
                self._ensure_default_pool()
                return
            time.sleep(0.2)
        log = (
            (self.dir / "sshd.log").read_text(errors="replace")[-2000:]
            if (self.dir / "sshd.log").exists()
            else ""
        )
        raise LabError(
            f"lab host {self.host.name} did not come up within {timeout:.0f}s "
            f"(daemons: {self.daemon_pids()}); sshd log tail:\n{log}"
        )

    def inside_argv(self, *argv: str) -> list[str]:
        """``argv`` prefixed to run in this host's mount namespace (its mounts and its root)."""
        return nsenter_argv(self.anchor_pid(), argv, uts=False)

    def virsh(self, *args: str, check: bool = True, input: str | None = None) -> str:
        """Run virsh against this host's libvirtd and return its output."""
        try:
            done = run_in_namespace(
                self.anchor_pid(),
                ["virsh", "--quiet", "-c", LIBVIRT_URI, *args],
                check=check,
                input=input,
            )
        except subprocess.CalledProcessError as exc:
            raise LabError(
                f"virsh {' '.join(args)} on lab host {self.host.name} failed: "
                f"{(exc.stderr or '').strip()}"
            ) from exc
        return done.stdout

    def restart_libvirtd(self, timeout: float = 30) -> None:
        """Stop and start this host's libvirtd (running guests keep running), as an admin would."""
        anchor = self.pid("sshd") or self.anchor_pid()
        old = self.pid("libvirtd")
        if old is not None:
            terminate([old])
        run_in_namespace(anchor, ["libvirtd", "--daemon", "--pid-file", "/run/libvirtd.pid"])
        deadline = time.monotonic() + timeout
        while not (self.pid("libvirtd") and self._libvirt_answers()):
            if time.monotonic() > deadline:
                raise LabError(f"libvirtd on {self.host.name} did not come back")
            time.sleep(0.2)

    def stop(self) -> list[int]:
        """Stop every process in the host's namespace; return the pids that needed SIGKILL."""
        namespace = self.namespace()
        if namespace is None:
            return []
        if self.pid("libvirtd") is not None:
            for name in self.virsh("list", "--name", check=False).split():
                self.virsh("destroy", name, check=False)
        # QEMU first (libvirtd would otherwise log their deaths), then the daemons, then anything
        # left in the namespace (ssh sessions and their children).
        qemu_pids = [
            pid
            for pid_file in (self.dir / "run" / "libvirt" / "qemu").glob("*.pid")
            if (pid := read_pid_file(pid_file)) is not None and mount_namespace(pid) == namespace
        ]
        killed = terminate(qemu_pids)
        killed += terminate(p for d in DAEMONS if (p := self.pid(d)) is not None)
        killed += terminate(self._namespace_processes(), grace=5)
        (self.dir / "namespace").unlink(missing_ok=True)
        return killed

    def _namespace_processes(self) -> list[int]:
        namespace = self.namespace()
        if namespace is None:
            return []
        marker = str(self.dir)
        mine = []
        for pid in processes_in_namespace(namespace):
            try:
                if marker in Path(f"/proc/{pid}/mountinfo").read_text():
                    mine.append(pid)
            except OSError:
                continue
        return mine

    # --- inspection --------------------------------------------------------------------------

    def daemon_pids(self) -> dict[str, int | None]:
        """Each daemon's pid, or None when it is not running."""
        return {d: self.pid(d) for d in DAEMONS}

    def status(self) -> HostStatus:
        """Daemons, SSH reachability and the host's VMs with their states."""
        vms: dict[str, str] = {}
        if self.pid("libvirtd") is not None:
            for line in self.virsh("list", "--all", "--name", check=False).splitlines():
                name = line.strip()
                if name:
                    state = self.virsh("domstate", name, check=False).strip()
                    vms[name] = state or "unknown"
        return HostStatus(
            name=self.host.name,
            address=self.host.address,
            port=self.host.port,
            daemons=self.daemon_pids(),
            ssh_reachable=self._ssh_port_open(),
            vms=vms,
        )

    def _libvirt_answers(self) -> bool:
        try:
            self.virsh("version")
        except (LabError, subprocess.TimeoutExpired):
            return False
        return True

    def _ssh_port_open(self) -> bool:
        try:
            with socket.create_connection((self.host.address, self.host.port), timeout=1):
                return True
        except OSError:
            return False

    def _ensure_default_pool(self) -> None:
        pools = self.virsh("pool-list", "--all", "--name").split()
        if "default" not in pools:
            self.virsh("pool-define-as", "default", "dir", "--target", "/var/lib/libvirt/images")
            self.virsh("pool-autostart", "default")
        if "default" not in self.virsh("pool-list", "--name").split():
            self.virsh("pool-start", "default")
