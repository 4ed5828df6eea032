"""Drives one lab host's libvirtd from inside its mount namespace (a helper of the benchmarks).

:class:`HostDriver` (the benchmark's side) starts it as ``nsenter --target <libvirtd pid> --mount
<python> -m bench.common.lab_driver DOMAIN_TYPE`` with ``PYTHONPATH`` = the checkout; it
talks to the host's own ``qemu:///system`` (no SSH: this is set-up and event generation, not
what is measured) and answers one JSON object per line on stdout for each JSON request read on
stdin::

    {"op": "define_many", "names": ["bench-0000", ...]}   -> {"ok": true, "seconds": 3.1}
    {"op": "start", "name": "bench-0000"}                  -> {"ok": true, "t0": ..., "t1": ...}
    {"op": "start_many", "names": [...]}                   -> {"ok": true, "t0": ..., "t1": ...}
    {"op": "local_read", "runs": 3}                        -> {"ok": true, "seconds": [...]}

``t0``/``t1`` are ``time.monotonic()`` just before and just after the libvirt call; on Linux
that clock is shared by every process of the machine, so the benchmark can compare them with
the moment its own event callback ran. Ops: define_many, define, start, destroy, undefine,
start_many, destroy_many, count, local_read, quit.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape, quoteattr

import libvirt

from bench.common.paths import ROOT
from kvm_clone_tui.lab.processes import nsenter_argv

if TYPE_CHECKING:
    from bench.common.lab import BenchLab

URI = "qemu:///system"
IMAGES = "/var/lib/libvirt/images"  # bench.common.lab.IMAGES (not imported: this runs in a host)
DISK_SIZE = "1G"


def disk_path(name: str) -> str:
    """Where VM ``name``'s disk lives on the host."""
    return f"{IMAGES}/{name}.qcow2"


def mac_for(index: int) -> str:
    """A locally administered MAC address that is unique per VM index."""
    return f"52:54:00:be:{(index >> 8) & 0xFF:02x}:{index & 0xFF:02x}"


def domain_xml(name: str, index: int, domain_type: str) -> str:
    """A small but ordinary VM: 1 vCPU, 64 MiB, one qcow2 virtio disk, one NIC, a pty console.

    The NIC's option ROM is off so that a started VM idles in the BIOS instead of running
    iPXE's network boot loop under TCG (this machine has two cores).
    """
    return (
        f"<domain type={quoteattr(domain_type)}><name>{escape(name)}</name>"
        "<memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>"
        "<devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file={quoteattr(disk_path(name))}/><target dev='vda' bus='virtio'/></disk>"
        f"<interface type='user'><mac address={quoteattr(mac_for(index))}/>"
        "<model type='virtio'/><rom enabled='no'/></interface>"
        "<serial type='pty'/>"
        "</devices></domain>"
    )


def create_disk(name: str) -> None:
    """An empty qcow2 image for VM ``name`` (``qemu-img create``)."""
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", disk_path(name), DISK_SIZE],
        check=True,
        capture_output=True,
    )


def index_of(name: str) -> int:
    """The number at the end of a VM name (``bench-0042`` -> 42), for its MAC address."""
    digits = "".join(c for c in name[-5:] if c.isdigit())
    return int(digits or "0")


class Driver:
    """One libvirt connection to the host this process runs in."""

    def __init__(self, domain_type: str) -> None:
        self.conn = libvirt.open(URI)
        self.domain_type = domain_type

    def refresh_pool(self) -> None:
        """Make the ``default`` pool see new images (as a real host's pool would)."""
        self.conn.storagePoolLookupByName("default").refresh(0)

    def define_many(self, names: list[str]) -> dict[str, Any]:
        """Create a disk and define a VM for each name (disks created 4 at a time)."""
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(create_disk, names))
        self.refresh_pool()
        for name in names:
            self.conn.defineXML(domain_xml(name, index_of(name), self.domain_type))
        return {"seconds": time.monotonic() - started}

    def define(self, name: str) -> dict[str, Any]:
        """Define one VM (its disk is created and the pool refreshed before the timing)."""
        create_disk(name)
        self.refresh_pool()
        xml = domain_xml(name, index_of(name), self.domain_type)
        return self._timed(lambda: self.conn.defineXML(xml))

    def _timed(self, call: Callable[[], object]) -> dict[str, Any]:
        t0 = time.monotonic()
        call()
        return {"t0": t0, "t1": time.monotonic()}

    def act(self, op: str, names: list[str]) -> dict[str, Any]:
        """start / destroy / undefine each of ``names``, back to back, timed as a whole."""
        domains = [self.conn.lookupByName(n) for n in names]
        method = {"start": "create", "destroy": "destroy", "undefine": "undefine"}[op]
        return self._timed(lambda: [getattr(d, method)() for d in domains])

    def local_read(self, runs: int) -> dict[str, Any]:
        """Time kvm-clone's own full read on the local socket (no SSH): the libvirt floor."""
        from kvm_clone_tui.engine.inventory import read_inventory

        seconds = []
        for _ in range(runs):
            t0 = time.monotonic()
            inventory = read_inventory(self.conn, "local")
            seconds.append(time.monotonic() - t0)
        return {"seconds": seconds, "vms": len(inventory.vms)}

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one request."""
        op = request["op"]
        if op == "define_many":
            return self.define_many(list(request["names"]))
        if op == "define":
            return self.define(str(request["name"]))
        if op in ("start", "destroy", "undefine"):
            return self.act(op, [str(request["name"])])
        if op in ("start_many", "destroy_many"):
            return self.act(op.removesuffix("_many"), list(request["names"]))
        if op == "count":
            return {"count": len(self.conn.listAllDomains(0))}
        if op == "local_read":
            return self.local_read(int(request.get("runs", 3)))
        raise ValueError(f"unknown op {op!r}")


def vm_names(start: int, stop: int, prefix: str = "bench") -> list[str]:
    """``bench-0000`` ... (``stop`` exclusive): the names benchmarks give the VMs they define."""
    return [f"{prefix}-{i:04d}" for i in range(start, stop)]


class HostDriver:
    """This module running inside one lab host's namespace (libvirt, no SSH), seen from the
    benchmark: one JSON request, one JSON answer."""

    def __init__(self, lab: BenchLab, name: str) -> None:
        self.name = name
        cmd = nsenter_argv(
            lab.libvirtd_pid(name),
            [sys.executable, "-m", "bench.common.lab_driver", lab.domain_type()],
            uts=False,
        )
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.process = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # Ctrl-C goes to the benchmark, which then cleans up
        )
        self._lock = threading.Lock()

    def request(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one request and wait for its answer (thread-safe)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        with self._lock:
            self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: lab driver exited (code {self.process.poll()})")
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise RuntimeError(f"{self.name}: {op} failed: {answer.get('error')}")
        return answer

    def close(self) -> None:
        """Stop the driver."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self.process.stdin is not None
                self.process.stdin.write('{"op": "quit"}\n')
                self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def main() -> int:
    """Serve requests until ``quit`` or end of input."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    driver = Driver(sys.argv[1] if len(sys.argv) > 1 else "qemu")
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("op") == "quit":
            break
        try:
            answer = {"ok": True, **driver.handle(request)}
        except Exception as exc:  # report to the benchmark instead of dying
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
    driver.conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
