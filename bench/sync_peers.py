"""Side-by-side sync benchmark: kvm-clone sync (bitmap, hash) against rsync and a fresh clone.

Run as root from the repository; it brings up a lab of its own (two hosts, no sample VMs) and
tears it down at the end (``--lab-dir DIR`` uses a lab that is already up instead)::

    .venv/bin/python -m bench.sync_peers [--runs 3] [--sizes 20G,200G]
        [--private-lab 127.0.4.2] [--markdown FILE]

Results and their analysis: docs/benchmarks.md, section "Sync".

Workload: VM ``bench-sync`` on alpha with one qcow2 disk of 20 GiB virtual size holding 2 GiB of
data (8 extents of 256 MiB spread over the disk, alternately random bytes and log text; written
into a sparse raw file here, converted with ``qemu-img convert``), shut off. For every further
size of ``--sizes`` a VM ``bench-sync-<size>`` holds the same data at the same guest offsets in
a disk of that virtual size.

Every method starts from the same kind of state: a fresh ``kvm-clone clone alpha beta VM
--new-name NAME`` (which leaves a checkpoint, a dirty bitmap, on the source), then the source
changes: 3200 pieces of 64 KiB (200 MiB) of new random bytes at distinct 64 KiB-aligned guest
offsets inside the data (offsets from a fixed seed per run, bytes new for every method), written
through the qcow2 format with ``qemu-io -f qcow2 IMG`` (commands on stdin), which records them in
the image's persistent dirty bitmaps as a running QEMU would. Then, after ``sync; echo 3 >
/proc/sys/vm/drop_caches`` and a wait for a quiet machine, one of (round-robin within a run):

1. ``kvm-clone sync alpha beta VM --target-name NAME --mode bitmap``
2. ``kvm-clone sync alpha beta VM --target-name NAME --mode hash``
3. ``ssh -A alpha rsync --inplace --no-whole-file --stats IMG beta:CLONE_IMG`` (the qcow2 file
   onto the clone's file, host to host, agent forwarding like clone_peers' rsync peers)
4. a fresh full ``kvm-clone clone alpha beta VM --new-name NAME2`` of the changed VM (no
   earlier clone needed)
5. ``kvm-clone sync --mode bitmap`` of ``bench-sync-<size>`` for each further size

kvm-clone runs with an ``ssh-agent`` holding the lab key, as an operator with an agent would:
``clone`` then takes its direct route (alpha sends straight to beta); ``sync`` relays through
this process whatever the agent (it has no direct route yet), so its data crosses two hops.

After each method, ``qemu-img compare -U`` of the source image and the clone's image (their
paths in the lab's directories) must say they are identical as the guest sees them; then the
clone is undefined and deleted on beta and the source's checkpoints are removed.

Measured per run: wall seconds of the command (start-up and logins included); bytes: kvm-clone's
``bytes_sent`` (payload it sent), rsync's ``--stats`` "Total bytes sent" + "received" (its
protocol stream), and the real SSH traffic: byte counters of iptables rules in a chain of this
benchmark (hooked into OUTPUT, removed at the end) matching TCP to and from port 22 of the two
lab hosts (IP packets with their headers: everything the SSH connections of the method carried,
hash lists, control and logins included; loopback packets pass OUTPUT once); the ratio of those
bytes to the changed bytes (200 MiB); the client's peak RSS (``VmHWM`` summed over the processes
this script started for the run, sampled every 0.1 s: for rsync only the local ``ssh``, rsync
itself runs on the hosts); the load average and the machine's busy fraction during the run.
Medians over ``--runs``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.common.disk_data import DataSource, spread, write_extents
from bench.common.lab import DST, IMAGES, SRC, BenchLab, find_lab, private_lab
from bench.common.machine import (
    busy_between,
    cpu_times,
    drop_caches,
    load_text,
    machine_summary,
    wait_quiet,
)
from bench.common.paths import KVM_CLONE
from bench.common.processes import RssSampler
from bench.common.ssh_agent import ssh_agent
from bench.common.units import GiB, MiB, mib, parse_size, size_label

VM = "bench-sync"
PIECE = 64 << 10
DATA = 2 * GiB
EXTENTS = 8
CHANGE = 200 * MiB
RUN_TIMEOUT = 900.0
TARGET_WIRE_RATIO = 1.5
TARGET_SPEEDUP = 3.0
DEFAULT_LAB = "127.0.4.2"


# -- sizes and the workload ------------------------------------------------------------------------


METHOD_KEYS = ("bitmap", "hash", "rsync", "clone")


@dataclass(frozen=True)
class SourceVM:
    """A bench VM on alpha: one qcow2 disk of ``size`` virtual bytes."""

    name: str
    size: int

    @property
    def image(self) -> str:
        """Basename of its disk."""
        return f"{self.name}-vda.qcow2"


def domain_xml(vm: SourceVM, domain_type: str) -> str:
    """One virtio qcow2 disk, no NIC, never started."""
    return (
        f"<domain type='{domain_type}'><name>{vm.name}</name>"
        "<memory unit='MiB'>256</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os><devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{IMAGES}/{vm.image}'/><target dev='vda' bus='virtio'/></disk>"
        "</devices></domain>"
    )


def make_sources(lab: BenchLab, vms: list[SourceVM], data: int, tmp: Path) -> None:
    """Write the data once into a sparse raw file, convert it into each VM's qcow2, define."""
    t0 = time.perf_counter()
    scratch = tmp / "data.raw"
    base = vms[0].size
    write_extents(scratch, base, spread(base, data, EXTENTS), DataSource())
    existing = lab.run(SRC, "virsh", "list", "--all", "--name").split()
    for vm in vms:
        os.truncate(scratch, vm.size)  # same data at the same offsets, a bigger disk
        image = lab.images(SRC) / vm.image
        with contextlib.suppress(FileNotFoundError):
            image.unlink()
        subprocess.run(
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(scratch), str(image)],
            check=True,
        )
        if vm.name in existing:
            lab.run(SRC, "virsh", "undefine", "--checkpoints-metadata", vm.name)
        lab.run(SRC, "virsh", "define", "/dev/stdin", input=domain_xml(vm, lab.domain_type()))
    scratch.unlink()
    os.sync()
    lab.run(SRC, "virsh", "pool-refresh", "default")
    print(f"workload: {', '.join(v.name for v in vms)} made in {time.perf_counter() - t0:.0f} s")


def remove_sources(lab: BenchLab, vms: list[SourceVM]) -> None:
    """Undefine the bench VMs on alpha and delete their disks."""
    existing = lab.run(SRC, "virsh", "list", "--all", "--name", check=False).split()
    for vm in vms:
        if vm.name in existing:
            lab.run(SRC, "virsh", "undefine", "--checkpoints-metadata", vm.name, check=False)
        with contextlib.suppress(FileNotFoundError):
            (lab.images(SRC) / vm.image).unlink()


def drop_checkpoints(lab: BenchLab, vm: SourceVM) -> None:
    """Remove every checkpoint (libvirt metadata and qcow2 bitmap) of the shut-off source."""
    names = lab.run(SRC, "virsh", "checkpoint-list", "--name", vm.name, check=False).split()
    for name in names:
        lab.run(SRC, "virsh", "checkpoint-delete", "--metadata", vm.name, name, check=False)
    image = str(lab.images(SRC) / vm.image)
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    for bitmap in info.get("format-specific", {}).get("data", {}).get("bitmaps", []):
        subprocess.run(["qemu-img", "bitmap", "--remove", image, bitmap["name"]], check=True)


def change_offsets(run: int, base_size: int, data: int, change: int) -> list[int]:
    """Distinct 64 KiB-aligned guest offsets inside the data extents (seeded by the run)."""
    blocks = [
        ext.offset + i * PIECE
        for ext in spread(base_size, data, EXTENTS)
        for i in range(ext.length // PIECE)
    ]
    return sorted(random.Random(f"sync-bench-run-{run}").sample(blocks, change // PIECE))


def write_change(image: Path, offsets: list[int], seed: str, tmp: Path) -> None:
    """New random 64 KiB pieces at ``offsets``, written through the qcow2 format by qemu-io."""
    pieces = tmp / "pieces"
    pieces.mkdir(exist_ok=True)
    source = DataSource(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"))
    commands = []
    for i, off in enumerate(offsets):
        p = pieces / f"{i}"
        p.write_bytes(source.chunk("random", PIECE))
        commands.append(f"write -q -s {p} {off} {PIECE}\n")
    subprocess.run(
        ["qemu-io", "-f", "qcow2", str(image)],
        input="".join(commands),
        stdout=subprocess.DEVNULL,
        text=True,
        check=True,
    )
    shutil.rmtree(pieces)


# -- measuring ------------------------------------------------------------------------------------


class SshCounters:
    """iptables byte counters of TCP to and from port 22 of each lab host (a chain of our own)."""

    def __init__(self, lab: BenchLab, hosts: tuple[str, ...] = (SRC, DST)) -> None:
        self.chain = f"KVMCLONE-SYNCBENCH-{os.getpid()}"
        self.addrs = {h: lab.address(h) for h in hosts}
        self.keys: list[str] = []

    def _ipt(self, *args: str) -> str:
        return subprocess.run(
            ["iptables", "-w", *args], capture_output=True, text=True, check=True
        ).stdout

    def __enter__(self) -> SshCounters:
        self._ipt("-N", self.chain)
        for host, addr in self.addrs.items():
            self._ipt("-A", self.chain, "-p", "tcp", "-d", addr, "--dport", "22")
            self._ipt("-A", self.chain, "-p", "tcp", "-s", addr, "--sport", "22")
            self.keys += [f"{host} in", f"{host} out"]
        self._ipt("-I", "OUTPUT", "-j", self.chain)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ipt("-D", "OUTPUT", "-j", self.chain)
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ipt("-F", self.chain)
            self._ipt("-X", self.chain)

    def read(self, zero: bool = False) -> dict[str, int]:
        """Bytes per counter (``alpha in`` = to alpha's sshd); ``zero`` resets them after."""
        out = self._ipt("-L", self.chain, "-n", "-v", "-x", *(["-Z"] if zero else []))
        rows = [w for w in (line.split() for line in out.splitlines()) if w and w[0].isdigit()]
        return {key: int(row[1]) for key, row in zip(self.keys, rows, strict=True)}


@dataclass
class Outcome:
    """One measured run of one method."""

    method: str
    run: int
    seconds: float = 0.0
    ok: bool = False
    error: str = ""
    app_bytes: int = 0  # kvm-clone bytes_sent / rsync total bytes sent + received
    wire: dict[str, int] = field(default_factory=dict)
    rss_mib: float = 0.0
    load: float = 0.0
    busy: float = 0.0
    identical: bool = False
    note: str = ""

    @property
    def wire_total(self) -> int:
        """Every byte the SSH connections to both hosts carried (both directions)."""
        return sum(self.wire.values())

    @property
    def wire_hop(self) -> int:
        """The busier host's SSH traffic (in + out): the most any one network link carried.

        Relayed data crosses two hops (alpha -> client -> beta) and counts in both hosts'
        totals; direct data (alpha's ssh to beta) counts once, at beta."""
        return max(self.wire.get(f"{h} in", 0) + self.wire.get(f"{h} out", 0) for h in (SRC, DST))


def measured(
    argv: list[str], env: dict[str, str], exclude: set[int], counters: SshCounters, settle: float
) -> tuple[subprocess.CompletedProcess[str], float, float, dict[str, int], float, float]:
    """Drop caches, wait for quiet, run ``argv`` under the samplers.

    (process, seconds, peak RSS MiB, wire bytes, load average, busy fraction during the run)."""
    drop_caches()
    wait_quiet(settle)
    load = os.getloadavg()[0]
    counters.read(zero=True)
    b0 = cpu_times()
    with RssSampler(exclude) as rss:
        t0 = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
        seconds = time.perf_counter() - t0
    b1 = cpu_times()
    wire = counters.read()
    busy = busy_between(b0, b1)
    return done, seconds, rss.peak_kib / 1024, wire, load, busy


# -- one method, one run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """A way of bringing the clone up to date; ``prior_clone``: it needs a clone to update."""

    name: str
    label: str
    vm: SourceVM
    prior_clone: bool = True


def clone_vm(
    lab: BenchLab, vm: SourceVM, name: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """``kvm-clone clone alpha beta VM --new-name NAME --output json``."""
    return subprocess.run(
        [str(KVM_CLONE), "clone", SRC, DST, vm.name, "--new-name", name, "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def clone_disk(lab: BenchLab, name: str) -> str:
    """The path of the clone's only disk inside beta."""
    out = lab.run(DST, "virsh", "domblklist", "--details", name)
    paths = [line.split()[3] for line in out.splitlines() if line.split()[:2] == ["file", "disk"]]
    if len(paths) != 1:
        raise RuntimeError(f"{name} on {DST}: expected one disk, got {out}")
    return paths[0]


def clone_image(lab: BenchLab, name: str) -> Path:
    """The clone's disk on beta, as seen from here."""
    return lab.layout.host_path(DST, clone_disk(lab, name))


def remove_clone(lab: BenchLab, name: str) -> None:
    """Undefine a clone on beta and delete its files."""
    if name in lab.run(DST, "virsh", "list", "--all", "--name", check=False).split():
        with contextlib.suppress(RuntimeError):
            path = clone_image(lab, name)
            path.unlink(missing_ok=True)
        lab.run(DST, "virsh", "undefine", "--nvram", name, check=False)
    for stale in lab.images(DST).glob(f"*{name}*"):
        stale.unlink()
    lab.run(DST, "virsh", "pool-refresh", "default", check=False)


def identical(source: Path, clone: Path) -> tuple[bool, str]:
    """``qemu-img compare -U`` of the two images as the guest sees them."""
    done = subprocess.run(
        ["qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", str(source), str(clone)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def run_method(
    lab: BenchLab,
    method: Method,
    run: int,
    offsets: list[int],
    env: dict[str, str],
    exclude: set[int],
    counters: SshCounters,
    tmp: Path,
    settle: float,
) -> Outcome:
    """Fresh clone, change the source, measure the method, compare, clean up."""
    out = Outcome(method.name, run)
    mode = "bitmap" if "bitmap" in method.name else "hash"
    clone = f"bs-{method.name.replace(' ', '-').replace('@', '-')}-r{run}"
    source_image = lab.images(SRC) / method.vm.image
    try:
        remove_clone(lab, clone)
        drop_checkpoints(lab, method.vm)
        if method.prior_clone:
            done = clone_vm(lab, method.vm, clone, env)
            if done.returncode != 0:
                out.error = f"setup clone failed: {done.stderr.strip()[-300:]}"
                return out
        write_change(source_image, offsets, f"{run}-{method.name}", tmp)
        if method.name.startswith("kvm-clone sync"):
            argv = [str(KVM_CLONE), "sync", SRC, DST, method.vm.name, "--target-name", clone]
            argv += ["--mode", mode, "--output", "json"]
        elif method.name == "rsync":
            dest = clone_disk(lab, clone)
            rsync = ["rsync", "--inplace", "--no-whole-file", "--stats"]
            argv = lab.ssh(
                SRC, *rsync, f"{IMAGES}/{method.vm.image}", f"{DST}:{dest}", forward_agent=True
            )
        else:
            remove_clone(lab, clone)
            argv = [str(KVM_CLONE), "clone", SRC, DST, method.vm.name, "--new-name", clone]
            argv += ["--output", "json"]
        done, out.seconds, out.rss_mib, out.wire, out.load, out.busy = measured(
            argv, env, exclude, counters, settle
        )
        if done.returncode != 0:
            out.error = f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}"
            return out
        if method.name == "rsync":
            sent = re.search(r"Total bytes sent: ([\d,]+)", done.stdout)
            recv = re.search(r"Total bytes received: ([\d,]+)", done.stdout)
            if not sent or not recv:
                out.error = f"no --stats in rsync's output: {done.stdout[-300:]}"
                return out
            out.app_bytes = int(sent.group(1).replace(",", "")) + int(
                recv.group(1).replace(",", "")
            )
        else:
            result = json.loads(done.stdout)["result"]
            if method.prior_clone:
                out.app_bytes = int(result["bytes_sent"])
                out.note = (
                    f"mode {result['mode']} ({result.get('mode_reason', '')}); changed "
                    f"{result['changed_bytes'] / MiB:.1f} MiB; internal {result['seconds']:.1f} s"
                )
                if result["mode"] != mode:
                    out.error = f"ran in {result['mode']} mode"
                    return out
            else:
                out.app_bytes = int(result["bytes_copied"])
                out.note = f"route {result.get('route')}, internal {result['seconds']:.1f} s"
        out.identical, why = identical(source_image, clone_image(lab, clone))
        out.ok = out.identical
        if not out.identical:
            out.error = f"clone differs from the source: {why[-300:]}"
        return out
    except (subprocess.SubprocessError, RuntimeError, OSError, ValueError, KeyError) as exc:
        out.error = f"{type(exc).__name__}: {exc}"[-400:]
        return out
    finally:
        with contextlib.suppress(Exception):
            remove_clone(lab, clone)
        with contextlib.suppress(Exception):
            drop_checkpoints(lab, method.vm)


# -- reporting ------------------------------------------------------------------------------------


def summarise(methods: list[Method], outcomes: list[Outcome], change: int) -> tuple[str, list[str]]:
    """(Markdown table of medians, verdict lines)."""
    rows = [
        "| method | disk | runs ok | median s (min-max) | app bytes MiB | SSH wire MiB, all "
        "(alpha in/out, beta in/out) | busiest hop / changed | all wire / changed | client "
        "peak RSS MiB | load 1 min | busy % | guest view = source |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    med: dict[str, float] = {}
    ratio: dict[str, float] = {}
    for m in methods:
        mine = [o for o in outcomes if o.method == m.name]
        good = [o for o in mine if o.ok]
        if not good:
            err = "; ".join(sorted({o.error for o in mine}))[:300] or "not run"
            rows.append(
                f"| {m.label} | {size_label(m.vm.size)} | 0/{len(mine)} | "
                f"failed: {err} | | | | | | | | |"
            )
            continue
        secs = [o.seconds for o in good]
        med[m.name] = statistics.median(secs)

        def md(get: Callable[[Outcome], float], good: list[Outcome] = good) -> float:
            return float(statistics.median(get(o) for o in good))

        wire = md(lambda o: o.wire_total)
        ratio[m.name] = md(lambda o: o.wire_hop) / change
        parts = "/".join(
            mib(statistics.median(o.wire.get(k, 0) for o in good))
            for k in ("alpha in", "alpha out", "beta in", "beta out")
        )
        rows.append(
            f"| {m.label} | {size_label(m.vm.size)} | {len(good)}/{len(mine)} | "
            f"{med[m.name]:.1f} ({min(secs):.1f}-{max(secs):.1f}) | "
            f"{mib(md(lambda o: o.app_bytes))} | {mib(wire)} ({parts}) | "
            f"{ratio[m.name]:.2f} | {wire / change:.2f} | {md(lambda o: o.rss_mib):.0f} | "
            f"{md(lambda o: o.load):.1f} | {100 * md(lambda o: o.busy):.0f} | "
            f"{'yes' if all(o.identical for o in good) else '**NO**'} |"
        )
    verdict: list[str] = []
    for name in ("kvm-clone sync bitmap", "kvm-clone sync hash"):
        if name in ratio:
            verdict.append(
                f"{name}: busiest hop's SSH bytes {ratio[name]:.2f}x the changed bytes: target <= "
                f"{TARGET_WIRE_RATIO}x {'met' if ratio[name] <= TARGET_WIRE_RATIO else 'MISSED'}"
            )
    if "kvm-clone sync hash" in med and "rsync" in med:
        sp = med["rsync"] / med["kvm-clone sync hash"]
        verdict.append(
            f"hash mode: {sp:.2f}x as fast as rsync (median): target >= {TARGET_SPEEDUP}x "
            f"{'met' if sp >= TARGET_SPEEDUP else 'MISSED'}"
        )
    bitmap = [m for m in methods if m.name.startswith("kvm-clone sync bitmap") and m.name in med]
    if len(bitmap) > 1:
        small, big = bitmap[0], bitmap[-1]
        grow = med[big.name] / med[small.name]
        verdict.append(
            f"bitmap mode: {size_label(big.vm.size)} disk {med[big.name]:.1f} s vs "
            f"{size_label(small.vm.size)} disk {med[small.name]:.1f} s ({grow:.2f}x): target "
            f"'independent of disk size' {'met' if grow <= 1.2 else 'MISSED'} (within 20 %)"
        )
    return "\n".join(rows), verdict


def main() -> None:
    """Parse arguments, bring up the lab, run every method ``--runs`` times, report."""
    ap = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--runs", type=int, default=3, help="rounds over all methods (default 3)")
    ap.add_argument(
        "--sizes",
        default="20G,200G",
        help="virtual disk sizes: every method on the first, bitmap mode also on the others "
        "(default 20G,200G)",
    )
    ap.add_argument(
        "--data",
        type=parse_size,
        default=DATA,
        help="data in the disk (default 2G; it must fit the first size)",
    )
    ap.add_argument(
        "--change", type=parse_size, default=CHANGE, help="bytes changed per run (default 200M)"
    )
    ap.add_argument(
        "--private-lab",
        default=DEFAULT_LAB,
        metavar="ADDR",
        help=f"bring up a two-host lab (alpha at ADDR, beta at the next address; default "
        f"{DEFAULT_LAB}) in a temporary directory and tear it down at the end",
    )
    ap.add_argument(
        "--lab-dir",
        type=Path,
        metavar="DIR",
        help="use the lab that is already up in DIR instead (kept at the end)",
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=20.0,
        metavar="S",
        help="before each measurement wait up to S s for the machine to be < 35%% busy "
        "(default 20)",
    )
    ap.add_argument(
        "--methods",
        default=",".join(METHOD_KEYS),
        help=f"comma-separated subset of {','.join(METHOD_KEYS)} (default: all); bitmap "
        "includes the further sizes",
    )
    ap.add_argument("--markdown", type=Path, metavar="FILE", help="write the results here")
    a = ap.parse_args()
    a.methods = a.methods.split(",")
    if not a.methods or set(a.methods) - set(METHOD_KEYS):
        sys.exit(f"--methods: choose from {','.join(METHOD_KEYS)}")
    if os.geteuid() != 0:
        sys.exit("run as root (drop_caches, iptables counters, the lab's files)")
    try:
        sizes = [parse_size(s) for s in a.sizes.split(",")]
    except argparse.ArgumentTypeError as exc:
        sys.exit(f"--sizes: {exc}")
    if a.data > sizes[0] or a.change > a.data or a.change % PIECE or a.data % (EXTENTS * MiB):
        sys.exit(
            "--data must fit the first size and be a multiple of 8 MiB; --change must be a "
            "multiple of 64 KiB no larger than --data"
        )
    if a.runs < 1:
        sys.exit("--runs must be at least 1")
    if a.lab_dir:
        run_all(a, find_lab(a.lab_dir), sizes)
        return
    with private_lab(
        a.private_lab,
        prefix="kvm-clone-syncbench-lab-",
        announce=lambda root: print(
            f"private lab: kvm-clone lab --dir {root} up (alpha at {a.private_lab})", flush=True
        ),
    ) as lab:
        run_all(a, lab, sizes)


def run_all(a: argparse.Namespace, lab: BenchLab, sizes: list[int]) -> None:
    """Make the source VMs, run every method ``a.runs`` times, report, clean up."""
    vms = [SourceVM(VM, sizes[0])] + [
        SourceVM(f"{VM}-{size_label(s).lower()}", s) for s in sizes[1:]
    ]
    every = [
        Method("kvm-clone sync bitmap", "`kvm-clone sync --mode bitmap`", vms[0]),
        Method("kvm-clone sync hash", "`kvm-clone sync --mode hash`", vms[0]),
        Method("rsync", "`rsync --inplace --no-whole-file` alpha -> beta", vms[0]),
        Method("kvm-clone clone", "fresh full `kvm-clone clone`", vms[0], prior_clone=False),
        *(
            Method(
                f"kvm-clone sync bitmap@{size_label(vm.size)}",
                "`kvm-clone sync --mode bitmap`",
                vm,
            )
            for vm in vms[1:]
        ),
    ]
    methods = [m for m in every if m.name.split()[-1].split("@")[0] in a.methods]
    started = datetime.datetime.now().astimezone()
    load_start = os.getloadavg()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="kvm-clone-syncbench-", dir="/var/tmp") as name:
        tmp = Path(name)
        try:
            make_sources(lab, vms, a.data, tmp)
            with ssh_agent(lab, tmp) as (env, agent_pid), SshCounters(lab) as counters:
                for run in range(1, a.runs + 1):
                    offsets = change_offsets(run, sizes[0], a.data, a.change)
                    for m in methods:
                        out = run_method(
                            lab, m, run, offsets, env, {agent_pid}, counters, tmp, a.settle
                        )
                        outcomes.append(out)
                        print(
                            f"run {run} {m.name:<28} {out.seconds:7.1f} s  app "
                            f"{mib(out.app_bytes):>7} MiB  wire {mib(out.wire_total):>7} MiB "
                            f"({', '.join(f'{k} {mib(v)}' for k, v in out.wire.items())})  "
                            f"rss {out.rss_mib:4.0f} MiB  load {out.load:.1f}  busy "
                            f"{100 * out.busy:.0f} %  "
                            f"{'identical' if out.identical else 'FAILED ' + out.error}  "
                            f"{out.note}",
                            flush=True,
                        )
        finally:
            with contextlib.suppress(Exception):
                remove_sources(lab, vms)
    table, verdict = summarise(methods, outcomes, a.change)
    header = (
        f"Machine: {machine_summary()}, {started:%Y-%m-%d %H:%M %Z}. Source: one qcow2 "
        f"disk, {mib(a.data)} MiB of data, virtual {', '.join(size_label(s) for s in sizes)}; "
        f"change {mib(a.change)} MiB in {a.change // PIECE} pieces of 64 KiB. Runs: {a.runs}. "
        f"Command: `.venv/bin/python -m bench.sync_peers {shlex.join(sys.argv[1:])}`. Load "
        f"average (1/5/15 min) at start {load_text(load_start)}, at end "
        f"{load_text(os.getloadavg())}."
    )
    text = f"{header}\n\n{table}\n\n" + "\n".join(f"- {v}" for v in verdict) + "\n"
    print("\n" + text)
    if a.markdown:
        a.markdown.write_text(text)


if __name__ == "__main__":
    main()
