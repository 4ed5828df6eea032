"""The lab as the benchmarks use it: ``kvm_clone_tui.lab``'s ``Lab`` plus SSH commands to its
hosts, and labs of a benchmark's own (own state directory, own addresses, purged at the end).

A benchmark's own lab is brought up and down with the CLI (``kvm-clone lab --dir DIR up``) in a
child process that exits: the lab's daemons must not be descendants of the benchmark, whose
samplers count its descendants as the client being measured.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common.paths import KVM_CLONE
from kvm_clone_tui.lab.layout import LabLayout, LabState, default_cache_dir, default_state_dir
from kvm_clone_tui.lab.manager import Lab

IMAGES = "/var/lib/libvirt/images"
SRC, DST = "alpha", "beta"  # the source and destination host of the clone and sync benchmarks


@dataclass(frozen=True)
class BenchLab:
    """A lab that is up, with the commands a benchmark runs on its hosts."""

    lab: Lab

    @classmethod
    def at(cls, root: Path) -> BenchLab:
        """The lab whose state directory is ``root``."""
        return cls(Lab(LabLayout(root), default_cache_dir()))

    @property
    def layout(self) -> LabLayout:
        """Paths of the lab's state directory."""
        return self.lab.layout

    @property
    def ssh_config(self) -> Path:
        """The lab's OpenSSH client config (strict host keys)."""
        return self.layout.ssh_config

    @property
    def config(self) -> Path:
        """kvm-clone's config for the lab."""
        return self.layout.client_config

    def require_config(self) -> Path:
        """The kvm-clone config that ``lab up`` wrote for this lab (exits when there is none)."""
        path = self.config
        if not path.exists():
            raise SystemExit(
                f"{path} does not exist: this kvm-clone's `lab up` does not write a client config "
                "yet (LabLayout.client_config); the benchmark needs it"
            )
        return path

    def state(self) -> LabState:
        """What ``lab up`` recorded (exits when nothing was)."""
        state = self.lab.state()
        if state is None:
            raise SystemExit(f"no lab state in {self.layout.root} (kvm-clone lab up)")
        return state

    def names(self) -> list[str]:
        """The host names (alpha, beta, ...) as ``lab up`` recorded them."""
        return [h.name for h in self.state().hosts]

    def address(self, host: str) -> str:
        """The loopback address of lab host ``host``."""
        for h in self.state().hosts:
            if h.name == host:
                return h.address
        raise RuntimeError(f"{host} is not a host of the lab in {self.layout.root}")

    def domain_type(self) -> str:
        """``kvm`` or ``qemu``, as the lab chose for its guests."""
        state = self.lab.state()
        return state.domain_type if state else "qemu"

    def libvirtd_pid(self, host: str) -> int:
        """The pid of the host's libvirtd (the door into its namespace)."""
        return int((self.layout.host_dir(host) / "run" / "libvirtd.pid").read_text().strip())

    def anchor_pid(self, host: str) -> int:
        """A pid inside the host's mount namespace (``LabHostRuntime.anchor_pid``)."""
        return self.lab.runtime(host).anchor_pid()

    def images(self, host: str) -> Path:
        """The host's /var/lib/libvirt/images as seen from this machine."""
        return self.layout.host_path(host, IMAGES)

    def ssh(self, host: str, *words: str, forward_agent: bool = False) -> list[str]:
        """argv of ``ssh -F <lab>/ssh_config [-A] HOST <words quoted>``."""
        argv = ["ssh", "-F", str(self.ssh_config)]
        if forward_agent:
            argv.append("-A")
        return [*argv, host, shlex.join(words)] if words else [*argv, host]

    def run(self, host: str, *words: str, input: str | None = None, check: bool = True) -> str:
        """Run a command on a lab host over SSH; its stdout."""
        done = subprocess.run(
            self.ssh(host, *words), input=input, capture_output=True, text=True, timeout=120
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{host}: {shlex.join(words)}: {done.stderr.strip()}")
        return done.stdout

    def require_up(self, hosts: Sequence[str] = (SRC, DST)) -> None:
        """Exit unless every one of ``hosts`` runs its daemons and answers on its SSH port."""
        known = {h.name: h for h in (self.lab.state() or LabState(hosts=[])).hosts}
        for name in hosts:
            host = known.get(name)
            if host is None or not self.lab.runtime(name).is_up():
                sys.exit(f"lab host {name} is not up in {self.layout.root} (kvm-clone lab up)")
            if not port_open(host.address, host.port):
                sys.exit(f"lab host {name}: nothing answers on {host.address}:{host.port}")


def find_lab(lab_dir: Path | None = None, hosts: Sequence[str] = (SRC, DST)) -> BenchLab:
    """The lab in ``lab_dir`` (default: ``$KVM_CLONE_LAB_DIR`` or the user's lab, as ``kvm-clone
    lab path`` says); exits when one of ``hosts`` is not up."""
    lab = BenchLab.at(lab_dir or default_state_dir())
    lab.require_up(hosts)
    return lab


def port_open(address: str, port: int = 22) -> bool:
    """True when something listens on ``address:port``."""
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def next_address(base: str, offset: int) -> str:
    """``base`` + ``offset`` in the last octet (127.0.0.60 + 2 -> 127.0.0.62)."""
    head, last = base.rsplit(".", 1)
    return f"{head}.{int(last) + offset}"


class PrivateLab:
    """A lab of a benchmark's own, in its own state directory on its own addresses.

    :meth:`down` purges it and survives Ctrl-C; when the CLI fails (say it does not import
    because someone is half-way through editing it), ``Lab.down`` runs in this process instead:
    a benchmark must never leave its hosts running.
    """

    def __init__(
        self,
        root: Path,
        hosts: int,
        base_address: str,
        *,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.root = root
        self.hosts = hosts
        self.base_address = base_address
        self.log = log
        self.bench = BenchLab.at(root)
        self.started = False

    def command(self, *args: str) -> list[str]:
        """``kvm-clone lab --dir <root> ARGS``."""
        return [str(KVM_CLONE), "lab", "--dir", str(self.root), *args]

    def _run(self, cmd: list[str], *, check: bool, new_session: bool = False) -> int:
        """Run ``cmd``; its output goes to stderr with a ``log``, else nowhere."""
        if self.log is not None:
            self.log(f"$ {shlex.join(cmd)}")
        out = sys.stderr if self.log is not None else subprocess.DEVNULL
        done = subprocess.run(cmd, check=check, stdout=out, start_new_session=new_session)
        return done.returncode

    def up(self) -> float:
        """Start the hosts (no sample VMs); return the seconds it took. Refuses addresses on
        which something listens already (another lab, another benchmark's lab)."""
        busy = [
            a
            for a in (next_address(self.base_address, i) for i in range(self.hosts))
            if port_open(a)
        ]
        if busy:
            raise SystemExit(
                f"something already listens on {', '.join(busy)}:22 (another benchmark's lab?); "
                "choose other addresses (--base-address / --private-lab)"
            )
        cmd = self.command(
            "up", "--hosts", str(self.hosts), "--base-address", self.base_address, "--no-sample-vms"
        )
        self.started = True
        t0 = time.perf_counter()
        self._run(cmd, check=True)
        return time.perf_counter() - t0

    def down(self) -> None:
        """``lab down --purge``, immune to Ctrl-C while it runs (nothing when never started)."""
        if not self.started:
            return
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            code = self._run(self.command("down", "--purge"), check=False, new_session=True)
            if code != 0:
                if self.log is not None:
                    self.log(f"`lab down` exited {code}; stopping the lab in-process")
                Lab(self.bench.layout, default_cache_dir(), log=self.log or print).down(purge=True)
        finally:
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def private_lab(
    base_address: str,
    *,
    prefix: str,
    hosts: int = 2,
    require: Sequence[str] = (SRC, DST),
    announce: Callable[[Path], None] | None = None,
) -> Iterator[BenchLab]:
    """A lab of ``hosts`` hosts from ``base_address`` in a new directory under /var/tmp (named
    ``prefix...``; ``announce`` is called with it before ``lab up``), brought up without sample
    VMs and purged at the end, whatever happens."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    if announce is not None:
        announce(root)
    lab = PrivateLab(root, hosts, base_address)
    try:
        lab.up()
        lab.bench.require_up(require)
        yield lab.bench
    finally:
        lab.down()
        shutil.rmtree(root, ignore_errors=True)
