"""`kvm-clone lab up|down|status`: brings a whole multi-host lab up and down."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kvm_clone_tui.lab.client_config import write_client_config
from kvm_clone_tui.lab.guest import GuestAssets, build_guest_assets, probe_boot
from kvm_clone_tui.lab.host import HostStatus, LabHostRuntime
from kvm_clone_tui.lab.layout import LabError, LabHost, LabLayout, LabState
from kvm_clone_tui.lab.sample_vms import SampleVMs
from kvm_clone_tui.lab.ssh_files import ensure_operator_key, known_hosts_text, write_operator_files

REQUIRED_COMMANDS = (
    "libvirtd",
    "virtlogd",
    "virsh",
    "qemu-system-x86_64",
    "qemu-img",
    "ssh",
    "ssh-keygen",
    "unshare",
    "nsenter",
    "genisoimage",
    "cpio",
)
SSHD = "/usr/sbin/sshd"


def check_prerequisites() -> None:
    """Refuse early, with the fix, when the lab cannot run on this machine."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (it creates mount namespaces and runs libvirtd)")
    missing = [c for c in REQUIRED_COMMANDS if shutil.which(c) is None]
    if not Path(SSHD).exists():
        missing.append(SSHD)
    if missing:
        raise LabError(
            f"missing on this machine: {', '.join(missing)}; install the lab's packages with "
            "`make deps` (Debian: see Makefile APT_PACKAGES)"
        )


class Lab:
    """A lab rooted at one state directory."""

    def __init__(
        self, layout: LabLayout, cache_dir: Path, log: Callable[[str], None] = lambda _msg: None
    ) -> None:
        self.layout = layout
        self.cache_dir = cache_dir
        self.log = log

    def state(self) -> LabState | None:
        """What the last ``up`` recorded."""
        return self.layout.load_state()

    def runtimes(self) -> list[LabHostRuntime]:
        """The recorded hosts, ready to inspect or stop."""
        state = self.state()
        return [LabHostRuntime(self.layout, h) for h in (state.hosts if state else [])]

    def runtime(self, name: str) -> LabHostRuntime:
        """The runtime of host ``name``."""
        for runtime in self.runtimes():
            if runtime.host.name == name:
                return runtime
        known = ", ".join(r.host.name for r in self.runtimes()) or "none (run `kvm-clone lab up`)"
        raise LabError(f"no lab host named {name!r}; lab hosts: {known}")

    def up(self, hosts: list[LabHost], *, sample_vms: bool = True) -> LabState:
        """Bring every host up (idempotent) and create the sample VMs on the first one."""
        check_prerequisites()
        previous = self.state()
        if previous and previous.hosts != hosts:
            if any(r.is_up() for r in self.runtimes()):
                raise LabError(
                    "a lab with other hosts is up in "
                    f"{self.layout.root} ({', '.join(h.name for h in previous.hosts)}); "
                    "run `kvm-clone lab down` first"
                )
            previous = None
        pubkey = ensure_operator_key(self.layout)
        runtimes = [LabHostRuntime(self.layout, h) for h in hosts]
        for runtime in runtimes:
            runtime.prepare(pubkey)
        known = known_hosts_text([(r.host, r.host_public_key()) for r in runtimes])
        for runtime in runtimes:
            runtime.write_peer_files(hosts, known)
        write_operator_files(self.layout, [(r.host, r.host_public_key()) for r in runtimes])
        write_client_config(self.layout, hosts)

        guest: GuestAssets | None = None
        domain_type = "qemu"
        if sample_vms:
            self.log("guest kernel and initramfs: preparing (cached after the first run)")
            guest = build_guest_assets(self.cache_dir)
            domain_type = self._choose_domain_type(guest)
        state = LabState(hosts=hosts, domain_type=domain_type, sample_vms=sample_vms)
        self.layout.save_state(state)

        with ThreadPoolExecutor(max_workers=len(runtimes)) as pool:
            list(pool.map(lambda r: r.start(), runtimes))
        for runtime in runtimes:
            self.log(f"{runtime.host.name}: up on {runtime.host.address}:{runtime.host.port}")
        if guest is not None:
            created = SampleVMs(runtimes[0], domain_type, guest).ensure_all()
            if created:
                self.log(f"{runtimes[0].host.name}: sample VMs defined: {', '.join(created)}")
        return state

    def _choose_domain_type(self, guest: GuestAssets) -> str:
        """KVM when a guest really boots under it here, else TCG (``type='qemu'``)."""
        marker = self.cache_dir / f"accel-{guest.kernel.name}"
        if marker.exists():
            return marker.read_text().strip()
        choice = "qemu"
        if os.access("/dev/kvm", os.R_OK | os.W_OK):
            self.log("probing whether a guest boots under KVM (falls back to TCG)")
            if probe_boot(guest, self.cache_dir / "probe", accel="kvm", timeout=25):
                choice = "kvm"
        self.log(f"guests run with domain type {choice!r}")
        marker.write_text(choice)
        return choice

    def down(self, *, purge: bool = False) -> None:
        """Stop every lab process (by namespace); with ``purge`` also delete the lab's files."""
        for runtime in self.runtimes():
            hard = runtime.stop()
            note = f" ({len(hard)} needed SIGKILL)" if hard else ""
            self.log(f"{runtime.host.name}: down{note}")
        if purge and self.layout.root.exists():
            shutil.rmtree(self.layout.root)
            self.log(f"removed {self.layout.root}")

    def status(self) -> list[HostStatus]:
        """The status of every recorded host."""
        return [r.status() for r in self.runtimes()]
