"""Side-by-side clone benchmark: kvm-clone (relay, direct) against the usual tools, on the lab.

Run as root from the repository, on the shared lab (``kvm-clone lab up``) or on a lab of its
own (``--private-lab``: immune to other people's tests, which kill the shared beta's SSH
sessions and delete files from its pool)::

    .venv/bin/python bench/clone_peers.py [--runs 2] [--keep] [--private-lab] [--experiment]
        [--cap 180] [--markdown FILE]

Results and their analysis: docs/benchmarks.md, section "Clone".

Workload (made on ``alpha`` under bench-specific names, reused when it is already there):
VM ``bench-big`` with ``vda`` = ``bench-big-vda.img``, a 20 GiB raw sparse file holding 2 GiB of
data (8 extents of 256 MiB spread over the disk, alternately random bytes and log text), and
``vdb`` = ``bench-big-vdb.qcow2``, a 4 GiB qcow2 holding 256 MiB. The data is written from this
machine into the host's images folder (``LabLayout.host_path``); the VM is defined with
``virsh define`` over SSH.

Every run copies both files alpha -> beta; between runs the destination files are deleted and
the page cache is dropped (``sync; echo 3 > /proc/sys/vm/drop_caches``), the same for every
tool. Tools (round-robin, so that drift in the machine's load hits all of them alike):

1. ``kvm-clone clone alpha beta bench-big --new-name bench-copy --transfer relay``
2. the same with ``--transfer direct`` (an ``ssh-agent`` started here holds the lab key)
3. ``ssh alpha cat FILE | ssh beta 'cat > FILE'`` (one pipeline per file)
4. ``scp -3 alpha:F1 alpha:F2 beta:DIR``
5. ``ssh -A alpha rsync -avz F1 F2 beta:DIR`` (agent forwarding, the original tool's method)
6. ``ssh -A alpha rsync -avS --inplace F1 F2 beta:DIR``
7. ``ssh alpha tar -C DIR -cSf - F1 F2 | ssh beta tar -C DIR -xSf -``
8. ``virsh vol-download --sparse`` to a temp file here, then ``vol-create-as`` +
   ``vol-upload --sparse`` on beta (``qemu+ssh://`` with the lab's ssh_config)

Measured per run: wall seconds (the whole command, process start-up and logins included),
MiB/s of the source's allocated data, the destination's allocation (``st_blocks * 512``), the
client's peak RSS (``VmHWM`` of every process this script started for the run, sampled every
0.1 s and summed over the processes alive together; ``ru_maxrss`` from ``wait4`` cannot be used:
Linux carries the forking parent's peak over ``exec``), CPU seconds per process
kind on the whole machine (client, sshd, agent send/receive, ...) and a content check: the
sha256 of each file with its all-zero 1 MiB blocks elided (offset-tagged), identical for two
files exactly when their contents are (``--full-sha256`` hashes every byte instead: slow).

Tools that copy every zero of the 20 GiB disk would take most of an hour per round: a run still
going after ``--cap`` seconds is stopped, reported as "> cap" and that tool is not run again
(kvm-clone is never capped, only stopped after 300 s). A run that fails otherwise is run again
up to twice (the shared lab's interference), and the retries are printed.

``--profile`` adds one kvm-clone relay and one direct run under ``py-spy record`` (``pip install
py-spy``) and prints where the client spends its time. Everything the benchmark made on alpha
and beta is removed at the end (unless ``--keep``: the workload stays for the next run), and the
ssh-agent it started is stopped.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import hashlib
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from kvm_clone_tui.lab.layout import LabLayout

ROOT = Path(__file__).resolve().parent.parent
KVM_CLONE = ROOT / ".venv" / "bin" / "kvm-clone"
IMAGES = "/var/lib/libvirt/images"
VM = "bench-big"
COPY = "bench-copy"
SRC, DST = "alpha", "beta"
MiB, GiB = 1 << 20, 1 << 30
CHUNK = 8 * MiB
HASH_BLOCK = MiB
DEFAULT_CAP = 180.0
KVM_CLONE_TIMEOUT = 300.0  # kvm-clone: not subject to --cap; 5x what 2.3 GiB needs at 40 MiB/s
TARGET_SPEEDUP = 1.5
TARGET_RSS_MIB = 200.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the lab --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lab:
    """Paths and commands of the shared lab."""

    layout: LabLayout

    @property
    def ssh_config(self) -> Path:
        """The lab's OpenSSH client config (strict host keys)."""
        return self.layout.root / "ssh_config"

    @property
    def config(self) -> Path:
        """kvm-clone's config for the lab."""
        return self.layout.root / "config.yaml"

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

    def domain_type(self) -> str:
        """``kvm`` or ``qemu``, as the lab chose for its sample VMs."""
        state = json.loads(self.layout.state_file.read_text())
        return str(state.get("domain_type", "qemu"))


def find_lab(lab_dir: Path | None = None) -> Lab:
    """The lab in ``lab_dir`` (default: ``kvm-clone lab path``); exits when it is not up."""
    dir_args = ["--dir", str(lab_dir)] if lab_dir else []
    path = subprocess.run(
        [str(KVM_CLONE), "lab", *dir_args, "path"], capture_output=True, text=True, check=True
    ).stdout.strip()
    lab = Lab(LabLayout(Path(path)))
    status = subprocess.run(
        [str(KVM_CLONE), "lab", *dir_args, "status"], capture_output=True, text=True
    )
    for host in (SRC, DST):
        if not any(
            line.startswith(host) and line.rstrip().endswith("up")
            for line in status.stdout.splitlines()
        ):
            sys.exit(f"lab host {host} is not up (kvm-clone lab up): {status.stdout}")
    return lab


# -- the workload ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Extent:
    """A run of data written into a disk: random bytes or log text."""

    offset: int
    length: int
    kind: str  # random | text


@dataclass(frozen=True)
class Workload:
    """Sizes of the two disks of the bench VM."""

    raw_size: int = 20 * GiB
    raw_data: int = 2 * GiB
    raw_extents: int = 8
    qcow_size: int = 4 * GiB
    qcow_data: int = 256 * MiB
    qcow_extents: int = 4

    @property
    def raw_name(self) -> str:
        """Basename of the raw disk (vda)."""
        return f"{VM}-vda.img"

    @property
    def qcow_name(self) -> str:
        """Basename of the qcow2 disk (vdb)."""
        return f"{VM}-vdb.qcow2"

    @property
    def names(self) -> tuple[str, str]:
        """Both basenames, in the order they are copied."""
        return self.raw_name, self.qcow_name


def spread(size: int, data: int, count: int) -> list[Extent]:
    """``count`` equal extents holding ``data`` bytes, first at 0 and last at the end."""
    length = data // count // MiB * MiB
    step = (size - length) // max(1, count - 1) // MiB * MiB
    return [Extent(i * step, length, "random" if i % 2 == 0 else "text") for i in range(count)]


class DataSource:
    """Fast, seeded chunks of random bytes (AES-CTR) and of plausible log text."""

    def __init__(self, seed: int = 20240501) -> None:
        key = hashlib.sha256(str(seed).encode()).digest()
        self._enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        self._zeros = bytes(CHUNK)
        self._texts = [self._log_block(seed + i) for i in range(4)]
        self._n = 0

    @staticmethod
    def _log_block(seed: int) -> bytes:
        import random

        rnd = random.Random(seed)
        levels = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
        apps = ("nginx", "postgres", "sshd", "cron", "app-worker", "kernel")
        paths = ("/api/v1/items", "/login", "/static/app.js", "/health", "/api/v1/orders")
        out, size, t = [], 0, 1714550400.0
        while size < CHUNK:
            t += rnd.random() * 0.05
            stamp = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
            line = (
                f"{stamp:%Y-%m-%dT%H:%M:%S.%f}Z web{rnd.randrange(1, 9):02d} "
                f"{rnd.choice(apps)}[{rnd.randrange(100, 32000)}]: {rnd.choice(levels)} "
                f"req={rnd.getrandbits(48):012x} {rnd.choice(paths)} "
                f"status={rnd.choice((200, 200, 200, 304, 404, 500))} "
                f"took={rnd.randrange(1, 900)}ms user={rnd.randrange(1, 50000)}\n"
            )
            out.append(line)
            size += len(line)
        return "".join(out).encode()[:CHUNK]

    def chunk(self, kind: str, length: int) -> bytes:
        """``length`` (<= CHUNK) bytes of the given kind."""
        if kind == "random":
            return self._enc.update(self._zeros[:length])
        self._n += 1
        return self._texts[self._n % len(self._texts)][:length]


def write_extents(path: Path, size: int, extents: Sequence[Extent], source: DataSource) -> None:
    """Create a sparse file of ``size`` bytes with ``extents`` written into it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
        for ext in extents:
            done = 0
            while done < ext.length:
                n = min(CHUNK, ext.length - done)
                os.pwrite(fd, source.chunk(ext.kind, n), ext.offset + done)
                done += n
        os.fsync(fd)
    finally:
        os.close(fd)


def domain_xml(workload: Workload, domain_type: str) -> str:
    """The bench VM: two virtio disks (raw vda, qcow2 vdb), no NIC, never started."""
    return (
        f"<domain type='{domain_type}'><name>{VM}</name>"
        "<memory unit='MiB'>256</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os><devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file='{IMAGES}/{workload.raw_name}'/><target dev='vda' bus='virtio'/></disk>"
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{IMAGES}/{workload.qcow_name}'/><target dev='vdb' bus='virtio'/></disk>"
        "</devices></domain>"
    )


def make_workload(lab: Lab, workload: Workload, tmp: Path) -> None:
    """Write both disks into alpha's images folder and define the VM (reused if present)."""
    images = lab.images(SRC)
    raw, qcow = images / workload.raw_name, images / workload.qcow_name
    defined = VM in lab.run(SRC, "virsh", "list", "--all", "--name").split()
    if (
        defined
        and raw.exists()
        and qcow.exists()
        and raw.stat().st_size == workload.raw_size
        and abs(raw.stat().st_blocks * 512 - workload.raw_data) < 64 * MiB
    ):
        print(f"workload: reusing {VM} on {SRC}", flush=True)
        return
    t0 = time.perf_counter()
    source = DataSource()
    write_extents(
        raw,
        workload.raw_size,
        spread(workload.raw_size, workload.raw_data, workload.raw_extents),
        source,
    )
    scratch = tmp / "vdb.raw"
    write_extents(
        scratch,
        workload.qcow_size,
        spread(workload.qcow_size, workload.qcow_data, workload.qcow_extents),
        source,
    )
    with contextlib.suppress(FileNotFoundError):
        qcow.unlink()
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(scratch), str(qcow)], check=True
    )
    scratch.unlink()
    os.sync()
    if defined:
        lab.run(SRC, "virsh", "undefine", VM)
    lab.run(SRC, "virsh", "define", "/dev/stdin", input=domain_xml(workload, lab.domain_type()))
    lab.run(SRC, "virsh", "pool-refresh", "default")
    print(f"workload: {VM} written and defined on {SRC} in {time.perf_counter() - t0:.0f} s")


def remove_workload(lab: Lab, workload: Workload) -> None:
    """Undefine the bench VM on alpha and delete its files."""
    if VM in lab.run(SRC, "virsh", "list", "--all", "--name", check=False).split():
        lab.run(SRC, "virsh", "undefine", VM, check=False)
    for name in workload.names:
        with contextlib.suppress(FileNotFoundError):
            (lab.images(SRC) / name).unlink()
    lab.run(SRC, "virsh", "pool-refresh", "default", check=False)


def dest_names(workload: Workload) -> list[str]:
    """Every name a tool may leave on beta (the peers keep the source's names)."""
    return [*workload.names, f"{COPY}-vda.img", f"{COPY}-vdb.qcow2"]


def clean_destination(lab: Lab, workload: Workload) -> None:
    """Undefine the kvm-clone copy on beta and delete every file any tool wrote there."""
    if COPY in lab.run(DST, "virsh", "list", "--all", "--name", check=False).split():
        lab.run(DST, "virsh", "undefine", COPY, check=False)
    images = lab.images(DST)
    for name in dest_names(workload):
        with contextlib.suppress(FileNotFoundError):
            (images / name).unlink()
    for pattern in (f".kvmclone-*{COPY}-*", f".{VM}-*"):  # kvm-clone staging, rsync temp files
        for stale in images.glob(pattern):
            stale.unlink()
    lab.run(DST, "virsh", "pool-refresh", "default", check=False)


def drop_caches() -> None:
    """``sync; echo 3 > /proc/sys/vm/drop_caches`` (the whole machine: every lab host)."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def wait_quiet(max_wait: float, threshold: float = 0.35) -> float:
    """Wait (up to ``max_wait`` s) for a 1 s window in which the machine's CPUs are less than
    ``threshold`` busy; return the last window's busy fraction. The machine is shared (other
    people's tests and benchmarks, the lab's running guest): this keeps their bursts out of a
    run as far as possible, and the fraction is reported with the run."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = _busy()
        time.sleep(1.0)
        b1 = _busy()
        frac = (b1[0] - b0[0]) / max(1e-9, b1[1] - b0[1])
        if frac < threshold or time.monotonic() >= deadline:
            return frac


# -- content checks -------------------------------------------------------------------------------


def elided_sha256(path: Path) -> str:
    """sha256 over (offset, block) of every 1 MiB block that is not all zeros, plus the size.

    Holes are skipped with SEEK_DATA/SEEK_HOLE and never read; data is read and zero blocks
    are left out. Two files of equal size get the same digest exactly when their contents are
    equal, however they are allocated, at the cost of reading only their data.
    """
    h = hashlib.sha256()
    zero = bytes(HASH_BLOCK)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        h.update(size.to_bytes(8, "big"))
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            block = start - start % HASH_BLOCK
            while block < end:
                data = os.pread(fd, HASH_BLOCK, block)
                if data and not zero.startswith(data):
                    h.update(block.to_bytes(8, "big"))
                    h.update(data)
                block += HASH_BLOCK
            pos = block
    finally:
        os.close(fd)
    return h.hexdigest()


def full_sha256(path: Path) -> str:
    """Plain sha256 of every byte (holes read as zeros)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


# -- sampling processes ---------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                out += [
                    int(x) for x in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                ]
    return out


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid``."""
    seen: set[int] = set()
    todo = _children(pid)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo += _children(p)
    return seen


def _hwm_kib(pid: int) -> int:
    """VmHWM: the peak RSS of the process's current program (reset by exec)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _stat(pid: str) -> tuple[str, float] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return comm, (int(fields[11]) + int(fields[12])) / CLK_TCK


def _busy() -> tuple[float, float]:
    v = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


class Sampler:
    """Samples, every ``interval`` s while a run lasts, the client's RSS and every process's CPU.

    Client = descendants of this process except ``exclude`` (the ssh-agent). CPU time per pid
    is the growth of utime + stime over the run (a process that exits loses its last interval);
    pids are grouped into kinds: ``client <comm>``, ``agent send`` / ``agent receive`` (the
    kvm-clone host agent), ``host <comm>`` for the rest of the transfer's processes on the lab
    hosts, ``other`` for the machine's unrelated load (lab guests, other users' tests, kernel).
    """

    HOST_COMMS = frozenset(
        {
            "sshd",
            "ssh",
            "rsync",
            "tar",
            "cat",
            "scp",
            "sftp-server",
            "virt-ssh-helper",
            "libvirtd",
            "nc",
            "sh",
            "python3",
            "zstd",
        }
    )

    def __init__(self, exclude: set[int], interval: float = 0.1) -> None:
        self.exclude = exclude | {os.getpid()}
        self.interval = interval
        self.peak_rss_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._base: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._kind: dict[int, str] = {}
        self._hwm: dict[int, int] = {}
        self._busy0 = _busy()
        self.busy_fraction = 0.0

    def __enter__(self) -> Sampler:
        for pid, (_, cpu) in self._snapshot().items():
            self._base[pid] = cpu
        self._busy0 = _busy()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._tick()
        b1 = _busy()
        total = b1[1] - self._busy0[1]
        self.busy_fraction = (b1[0] - self._busy0[0]) / total if total else 0.0

    def _snapshot(self) -> dict[int, tuple[str, float]]:
        out: dict[int, tuple[str, float]] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                st = _stat(name)
                if st is not None:
                    out[int(name)] = st
        return out

    def _classify(self, pid: int, comm: str, client: set[int]) -> str:
        if pid in client:
            return f"client {comm}"
        if comm in ("python3", "python"):
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                words = [w.decode(errors="replace") for w in argv]
                if any("agent-" in w or "kvm-clone" in w for w in words):
                    cmd = next(
                        (
                            w
                            for w in words
                            if w
                            in ("send", "receive", "extents", "probe", "hash", "rename", "remove")
                        ),
                        "?",
                    )
                    return f"agent {cmd}"
            return "other"
        if comm in self.HOST_COMMS:
            return f"host {comm}"
        return "other"

    def _tick(self) -> None:
        client = descendants(os.getpid()) - self.exclude
        for p in client:
            self._hwm[p] = max(self._hwm.get(p, 0), _hwm_kib(p))
        self.peak_rss_kib = max(self.peak_rss_kib, sum(self._hwm.get(p, 0) for p in client))
        for pid, (comm, cpu) in self._snapshot().items():
            if pid not in self._kind or pid in client:  # (a client may exec: new comm)
                self._kind[pid] = self._classify(pid, comm, client)
            self._last[pid] = cpu

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._tick()

    def cpu_by_kind(self) -> dict[str, float]:
        """CPU seconds used during the run, per kind of process."""
        out: dict[str, float] = {}
        for pid, cpu in self._last.items():
            delta = cpu - self._base.get(pid, 0.0)
            if delta > 0:
                kind = self._kind.get(pid, "other")
                out[kind] = out.get(kind, 0.0) + delta
        return out


# -- running a tool -------------------------------------------------------------------------------


@dataclass
class Step:
    """One pipeline: commands whose stdout feeds the next one's stdin."""

    commands: list[list[str]]
    pidfiles: list[Path] = field(default_factory=list)  # remote pids to kill at the cap


@dataclass
class Outcome:
    """What one run of one tool did."""

    tool: str
    seconds: float
    ok: bool
    error: str = ""
    rss_mib: float = 0.0
    dest_allocated: int = 0
    content_ok: bool = False
    cpu: dict[str, float] = field(default_factory=dict)
    busy: float = 0.0
    busy_before: float = 0.0
    capped: bool = False
    note: str = ""


def _kill_tree(pid: int) -> None:
    """SIGTERM ``pid`` and its descendants (all of them started by this benchmark)."""
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)


def run_pipeline(step: Step, env: dict[str, str], deadline: float) -> tuple[int, str, bool]:
    """Run a pipeline to its end or ``deadline`` (monotonic); (worst exit, stderr tail, capped).

    When the deadline passes, the local processes are killed, and so are the remote ones whose
    pid the step's commands wrote into ``step.pidfiles`` (processes on lab hosts share this
    machine's pid namespace).
    """
    procs: list[subprocess.Popen[bytes]] = []
    err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    prev = None
    capped = False
    try:
        for i, argv in enumerate(step.commands):
            last = i == len(step.commands) - 1
            p = subprocess.Popen(
                argv,
                stdin=prev if prev is not None else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL if last else subprocess.PIPE,
                stderr=err,
                env=env,
            )
            if prev is not None:
                prev.close()
            prev = p.stdout
            procs.append(p)
        worst = 0
        for p in procs:
            while True:
                pid, status = os.waitpid(p.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline and not capped:
                    capped = True
                    for pidfile in step.pidfiles:
                        with contextlib.suppress(OSError, ValueError):
                            _kill_tree(int(pidfile.read_text().split()[0]))
                    for q in procs:
                        if q.returncode is None:
                            _kill_tree(q.pid)
                time.sleep(0.02)
            p.returncode = os.waitstatus_to_exitcode(status)
            worst = worst or p.returncode
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
        return worst, " | ".join(tail), capped
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                p.wait()
        err.close()


@dataclass
class Tool:
    """A way of copying both files; ``steps`` builds the pipelines of one run."""

    name: str
    label: str
    steps: Callable[[Path], list[Step]]
    needs_agent: bool = False
    route: str = ""  # kvm-clone's --transfer (kvm-clone tools only)


# An experiment, not product code: kvm-clone with ``_Watch.consume`` reading the sender's stderr
# with ``read(64 KiB)`` instead of ``async for line in stream``. asyncssh pauses reading of the
# whole channel once stdout holds ``CHANNEL_WINDOW`` unread bytes (the relay pump waiting on the
# destination); ``readline`` on stderr then raises IncompleteReadError at once, the async
# iterator yields b"" and ``consume`` spins on the event loop until reading resumes.
_READ_CONSUME = """
import sys, time
from kvm_clone_tui.agent.protocol import parse_progress
from kvm_clone_tui.cli.main import main
from kvm_clone_tui.engine import transfer
from kvm_clone_tui.engine.progress import disk_progress

async def consume(self, stream):
    pending = b""
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\\n")
        for raw in lines:
            line = raw.decode(errors="replace").strip()
            progress = parse_progress(line)
            if progress is None:
                if line:
                    self.other.append(line)
                continue
            if progress.done != self.done:
                self.done = progress.done
                self.last_change = time.monotonic()
            total = max(progress.total, self.item.allocated, progress.done)
            self.on_progress(disk_progress(self.item.label, progress.done, total, self.meter))

transfer._Watch.consume = consume
sys.exit(main(sys.argv[1:]))
"""


def kvm_clone_steps(route: str, patched: bool = False) -> Callable[[Path], list[Step]]:
    """``kvm-clone clone ... --transfer ROUTE --output json`` (``patched``: _READ_CONSUME)."""

    def steps(tmp: Path) -> list[Step]:
        out = tmp / f"kvm-clone-{route}{'-patched' if patched else ''}.json"
        prefix = [sys.executable, "-c", _READ_CONSUME] if patched else [str(KVM_CLONE)]
        cmd = shlex.join(
            [
                *prefix,
                "clone",
                SRC,
                DST,
                VM,
                "--new-name",
                COPY,
                "--transfer",
                route,
                "--output",
                "json",
            ]
        )
        return [Step([["sh", "-c", f"exec {cmd} > {shlex.quote(str(out))}"]])]

    return steps


def build_tools(lab: Lab, workload: Workload, experiment: bool = False) -> list[Tool]:
    """The eight ways (nine with ``experiment``), in the order they run within a round."""
    srcs = [f"{IMAGES}/{n}" for n in workload.names]

    def cat(tmp: Path) -> list[Step]:
        return [
            Step([lab.ssh(SRC, "cat", f), lab.ssh(DST, "sh", "-c", f"cat > {shlex.quote(f)}")])
            for f in srcs
        ]

    def scp(tmp: Path) -> list[Step]:
        return [
            Step(
                [
                    [
                        "scp",
                        "-q",
                        "-3",
                        "-F",
                        str(lab.ssh_config),
                        *[f"{SRC}:{f}" for f in srcs],
                        f"{DST}:{IMAGES}/",
                    ]
                ]
            )
        ]

    def rsync(*opts: str) -> Callable[[Path], list[Step]]:
        def steps(tmp: Path) -> list[Step]:
            # The remote rsync records its pid (in this machine's /var/tmp, which the lab
            # hosts share) so that a run stopped at --cap can stop it too.
            pidfile = tmp / "rsync.pid"
            pidfile.unlink(missing_ok=True)
            rsync = shlex.join(["rsync", *opts, *srcs, f"{DST}:{IMAGES}/"])
            script = f"echo $$ > {shlex.quote(str(pidfile))}; exec {rsync}"
            return [Step([lab.ssh(SRC, "sh", "-c", script, forward_agent=True)], [pidfile])]

        return steps

    def tar(tmp: Path) -> list[Step]:
        return [
            Step(
                [
                    lab.ssh(SRC, "tar", "-C", IMAGES, "-cSf", "-", *workload.names),
                    lab.ssh(DST, "tar", "-C", IMAGES, "-xSf", "-"),
                ]
            )
        ]

    def virsh(tmp: Path) -> list[Step]:
        wrapper = tmp / "ssh-lab"
        wrapper.write_text(f'#!/bin/sh\nexec ssh -F {shlex.quote(str(lab.ssh_config))} "$@"\n')
        wrapper.chmod(0o755)
        uri = {h: f"qemu+ssh://root@{h}/system?command={wrapper}" for h in (SRC, DST)}
        stage = tmp / "virsh"
        steps = [Step([["mkdir", "-p", str(stage)]])]
        for name in workload.names:
            size = (lab.images(SRC) / name).stat().st_size
            local = str(stage / name)
            steps += [
                Step(
                    [
                        [
                            "virsh",
                            "-q",
                            "-c",
                            uri[SRC],
                            "vol-download",
                            "--pool",
                            "default",
                            "--sparse",
                            name,
                            local,
                        ]
                    ]
                ),
                Step(
                    [
                        [
                            "virsh",
                            "-q",
                            "-c",
                            uri[DST],
                            "vol-create-as",
                            "default",
                            name,
                            str(size),
                            "--format",
                            "raw",
                            "--allocation",
                            "0",
                        ]
                    ]
                ),
                Step(
                    [
                        [
                            "virsh",
                            "-q",
                            "-c",
                            uri[DST],
                            "vol-upload",
                            "--pool",
                            "default",
                            "--sparse",
                            name,
                            local,
                        ]
                    ]
                ),
            ]
        steps.append(Step([["rm", "-rf", str(stage)]]))
        return steps

    return [
        Tool(
            "kvm-clone relay",
            "`kvm-clone clone --transfer relay`",
            kvm_clone_steps("relay"),
            route="relay",
        ),
        *(
            [
                Tool(
                    "kvm-clone relay, experiment",
                    "experiment: relay with `_Watch.consume` using `read()` (not product code)",
                    kvm_clone_steps("relay", patched=True),
                    route="relay",
                )
            ]
            if experiment
            else []
        ),
        Tool(
            "kvm-clone direct",
            "`kvm-clone clone --transfer direct`",
            kvm_clone_steps("direct"),
            needs_agent=True,
            route="direct",
        ),
        Tool("ssh cat | ssh cat", "`ssh alpha cat F \\| ssh beta 'cat > F'`", cat),
        Tool("scp -3", "`scp -3 alpha:F1 alpha:F2 beta:DIR`", scp),
        Tool(
            "rsync -avz",
            "`ssh -A alpha rsync -avz F1 F2 beta:DIR`",
            rsync("-avz"),
            needs_agent=True,
        ),
        Tool(
            "rsync -avS --inplace",
            "`ssh -A alpha rsync -avS --inplace F1 F2 beta:DIR`",
            rsync("-avS", "--inplace"),
            needs_agent=True,
        ),
        Tool("tar -S over ssh", "`ssh alpha tar -cSf - \\| ssh beta tar -xSf -`", tar),
        Tool(
            "virsh vol-download/upload --sparse",
            "`virsh vol-download --sparse` + `vol-upload --sparse`",
            virsh,
        ),
    ]


def dest_files(lab: Lab, workload: Workload, tool: Tool) -> list[tuple[Path, Path]]:
    """(source, destination) pairs as seen from this machine."""
    src, dst = lab.images(SRC), lab.images(DST)
    if tool.route:
        return [
            (src / workload.raw_name, dst / f"{COPY}-vda.img"),
            (src / workload.qcow_name, dst / f"{COPY}-vdb.qcow2"),
        ]
    return [(src / n, dst / n) for n in workload.names]


def run_tool(
    lab: Lab,
    workload: Workload,
    tool: Tool,
    env: dict[str, str],
    exclude: set[int],
    tmp: Path,
    digests: dict[Path, str],
    digest: Callable[[Path], str],
    settle: float,
    cap: float,
) -> Outcome:
    """Clean beta, drop caches, run the tool once under the sampler, check what arrived."""
    clean_destination(lab, workload)
    drop_caches()
    before = wait_quiet(settle)
    steps = tool.steps(tmp)
    error = ""
    t0 = time.perf_counter()
    deadline = time.monotonic() + (KVM_CLONE_TIMEOUT if tool.route else cap)
    capped = False
    with Sampler(exclude) as sampler:
        for step in steps:
            status, tail, capped = run_pipeline(step, env, deadline)
            if capped:
                limit = KVM_CLONE_TIMEOUT if tool.route else cap
                error = f"stopped at the {limit:.0f} s {'timeout' if tool.route else 'cap'}"
                break
            if status != 0:
                error = f"exit {status}: {tail}"
                break
    seconds = time.perf_counter() - t0
    out = Outcome(tool.name, seconds, not error, error, capped=capped)
    out.rss_mib = sampler.peak_rss_kib / 1024
    out.cpu = sampler.cpu_by_kind()
    out.busy = sampler.busy_fraction
    out.busy_before = before
    if tool.route and not error:
        patched = "-patched" if "experiment" in tool.name else ""
        result = json.loads((tmp / f"kvm-clone-{tool.route}{patched}.json").read_text())
        out.note = (
            f"route {result['result']['route']}, internal {result['result']['seconds']:.1f} s"
        )
        if result["result"]["route"] != tool.route:
            out.ok, out.error = False, f"ran via {result['result']['route']}"
    pairs = dest_files(lab, workload, tool)
    if capped:
        time.sleep(2)  # let killed remote processes go before the next cleanup
        return out
    if all(d.exists() for _, d in pairs):
        out.dest_allocated = sum(d.stat().st_blocks * 512 for _, d in pairs)
        out.content_ok = all(
            d.stat().st_size == s.stat().st_size and digest(d) == digests[s] for s, d in pairs
        )
    elif not error:
        out.ok, out.error = False, "destination files missing"
    return out


# -- ssh-agent ------------------------------------------------------------------------------------


@contextlib.contextmanager
def ssh_agent(lab: Lab, tmp: Path) -> Iterator[tuple[dict[str, str], int]]:
    """An ``ssh-agent -D`` holding the lab key; (environment with SSH_AUTH_SOCK, its pid)."""
    sock = tmp / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        # A private state dir: kvm-clone's job journals of this benchmark are invisible to
        # anyone else's `kvm-clone recover` (which rolls back every unfinished journal it finds,
        # running or not), and theirs to ours.
        env = {
            **os.environ,
            "SSH_AUTH_SOCK": str(sock),
            "KVM_CLONE_CONFIG": str(lab.config),
            "KVM_CLONE_STATE_DIR": str(tmp / "state"),
        }
        subprocess.run(
            ["ssh-add", "-q", str(lab.layout.operator_key)],
            env=env,
            check=True,
            stderr=subprocess.DEVNULL,
        )
        yield env, agent.pid
    finally:
        agent.terminate()
        agent.wait(timeout=10)


# -- ciphers and profiles -------------------------------------------------------------------------


def negotiated_ciphers(lab: Lab, env: dict[str, str]) -> dict[str, str]:
    """The cipher each hop really uses: OpenSSH (``ssh -v``) and kvm-clone's asyncssh."""
    out: dict[str, str] = {}

    def ssh_v(argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        for line in done.stderr.splitlines():
            if "kex: client->server cipher:" in line:
                return line.split("cipher:")[1].split()[0]
        return "?"

    out["OpenSSH here -> alpha (cat, scp, tar, rsync login)"] = ssh_v(
        ["ssh", "-v", "-F", str(lab.ssh_config), SRC, "true"]
    )
    out["OpenSSH alpha -> beta (rsync)"] = ssh_v(
        lab.ssh(SRC, "ssh", "-v", DST, "true", forward_agent=True)
    )
    code = (
        "import asyncio\n"
        "from kvm_clone_tui import KVMCloneClient\n"
        "from kvm_clone_tui.engine.ssh import preferred_ciphers\n"
        "async def main():\n"
        "    async with KVMCloneClient() as c:\n"
        "        h = await c.host('alpha')\n"
        "        print(h.ssh.get_extra_info('send_cipher'), preferred_ciphers()[0])\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    words = done.stdout.split()
    if len(words) == 2:
        out["asyncssh here -> alpha (kvm-clone relay)"] = words[0]
        out["OpenSSH alpha -> beta (kvm-clone direct, Ciphers= first)"] = words[1]
    else:
        out["asyncssh here -> alpha (kvm-clone relay)"] = f"? {done.stderr.strip()[-200:]}"
    return out


def py_spy_profile(
    lab: Lab, workload: Workload, route: str, env: dict[str, str], tmp: Path
) -> list[tuple[str, float]]:
    """One kvm-clone run under ``py-spy record``: (function, share of samples) for the top 15."""
    spy = shutil.which("py-spy", path=str(ROOT / ".venv" / "bin")) or shutil.which("py-spy")
    if spy is None:
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return []
    clean_destination(lab, workload)
    drop_caches()
    raw = tmp / f"py-spy-{route}.txt"
    cmd = [
        spy,
        "record",
        "--rate",
        "200",
        "--format",
        "raw",
        "--threads",
        "--idle",
        "-o",
        str(raw),
        "--",
        str(KVM_CLONE),
        "clone",
        SRC,
        DST,
        VM,
        "--new-name",
        COPY,
        "--transfer",
        route,
        "--output",
        "json",
    ]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        thread = frames[0]
        own[f"{thread} :: {frames[-1]}"] += n
    return [(k, v / total) for k, v in own.most_common(15)] if total else []


# -- reporting ------------------------------------------------------------------------------------


def fmt_mib(n: float) -> str:
    """Bytes as MiB with one decimal."""
    return f"{n / MiB:.1f}"


def summarise(
    tools: list[Tool], outcomes: list[Outcome], allocated: int, runs: int
) -> tuple[str, list[str]]:
    """(Markdown table, verdict lines)."""
    rows = [
        "| tool | runs ok | best s | median s | best MiB/s | median MiB/s | dest. allocation "
        "(source = 100 %) | client peak RSS MiB (max) | content = source | CPU s (median run) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    medians: dict[str, float] = {}
    bests: dict[str, float] = {}
    rss: dict[str, float] = {}
    for tool in tools:
        mine = [o for o in outcomes if o.tool == tool.name]
        good = [o for o in mine if o.ok]
        stopped = [o for o in mine if o.capped]
        if stopped and not good:
            cap = stopped[0].seconds
            medians[tool.name] = bests[tool.name] = cap
            cpu = ", ".join(
                f"{k} {v:.1f}"
                for k, v in sorted(stopped[0].cpu.items(), key=lambda kv: -kv[1])
                if v >= 0.3
            )
            rows.append(
                f"| {tool.label} | stopped at the cap | > {cap:.0f} | > {cap:.0f} | "
                f"< {allocated / MiB / cap:.0f} | < {allocated / MiB / cap:.0f} | "
                f"(not finished) | {stopped[0].rss_mib:.0f} | - | {cpu} "
                f"(machine busy {100 * stopped[0].busy:.0f} %) |"
            )
            continue
        if not good:
            err = mine[0].error if mine else "not run"
            rows.append(f"| {tool.label} | 0/{len(mine)} | failed: {err} | | | | | | | |")
            continue
        times = sorted(o.seconds for o in good)
        best, med = times[0], statistics.median(times)
        bests[tool.name], medians[tool.name] = best, med
        rss[tool.name] = max(o.rss_mib for o in good)
        mid = sorted(good, key=lambda o: o.seconds)[(len(good) - 1) // 2]
        cpu = ", ".join(
            f"{k} {v:.1f}" for k, v in sorted(mid.cpu.items(), key=lambda kv: -kv[1]) if v >= 0.3
        )
        allocs = {
            f"{fmt_mib(o.dest_allocated)} MiB ({100 * o.dest_allocated / allocated:.0f} %)"
            for o in good
        }
        alloc = " / ".join(sorted(allocs))
        content = "yes" if all(o.content_ok for o in good) else "**NO**"
        rows.append(
            f"| {tool.label} | {len(good)}/{len(mine)} | {best:.1f} | {med:.1f} | "
            f"{allocated / MiB / best:.0f} | {allocated / MiB / med:.0f} | {alloc} | "
            f"{rss[tool.name]:.0f} | {content} | {cpu} (machine busy {100 * mid.busy:.0f} %) |"
        )
    verdict: list[str] = []
    peers = {k: v for k, v in medians.items() if not k.startswith("kvm-clone")}
    peer_best = {k: v for k, v in bests.items() if not k.startswith("kvm-clone")}
    if peers:
        fastest = min(peers, key=lambda k: peers[k])
        fastest_b = min(peer_best, key=lambda k: peer_best[k])
        for name in ("kvm-clone relay", "kvm-clone direct"):
            if name not in {t.name for t in tools}:
                continue
            if name not in medians:
                verdict.append(f"{name}: no successful run")
                continue
            sp_med = peers[fastest] / medians[name]
            sp_best = peer_best[fastest_b] / bests[name]
            verdict.append(
                f"{name}: {sp_med:.2f}x the fastest peer by median ({fastest}), "
                f"{sp_best:.2f}x by best ({fastest_b}): target {TARGET_SPEEDUP}x "
                f"{'met' if min(sp_med, sp_best) >= TARGET_SPEEDUP else 'MISSED'}; "
                f"client RSS {rss[name]:.0f} MiB: target < {TARGET_RSS_MIB:.0f} "
                f"{'met' if rss[name] < TARGET_RSS_MIB else 'MISSED'}"
            )
    return "\n".join(rows), verdict


def main() -> None:
    """Parse arguments, make the workload, run every tool ``--runs`` times, report, clean up."""
    ap = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Workload, tools and measurements are described at the top of this file.",
    )
    ap.add_argument("--runs", type=int, default=2, help="rounds over all tools (default 2)")
    ap.add_argument(
        "--keep",
        action="store_true",
        help="leave the workload VM and its files on alpha for the next run",
    )
    ap.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only tools whose name contains NAME (repeatable)",
    )
    ap.add_argument("--raw-gib", type=float, default=20, help="virtual size of vda (20)")
    ap.add_argument("--raw-data-gib", type=float, default=2, help="data in vda (2)")
    ap.add_argument(
        "--full-sha256",
        action="store_true",
        help="plain sha256 of every byte instead of the zero-elided one (slow)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also run kvm-clone relay and direct once under py-spy",
    )
    ap.add_argument(
        "--private-lab",
        nargs="?",
        const="127.0.0.70",
        metavar="IP",
        help="bring up a lab of our own (alpha, beta from IP, default 127.0.0.70) and tear it "
        "down at the end, instead of the shared lab: other people's integration tests kill "
        "every SSH session of the shared beta and delete unknown files from its pool",
    )
    ap.add_argument(
        "--experiment",
        action="store_true",
        help="add a relay run of kvm-clone with its stderr reader patched at run time "
        "(read() instead of readline(); see _READ_CONSUME): how much the spin costs",
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=90.0,
        metavar="S",
        help="before each run wait up to S s for the machine to be < 35%% busy (default 90)",
    )
    ap.add_argument(
        "--cap",
        type=float,
        default=DEFAULT_CAP,
        metavar="S",
        help="stop a run after S s and do not run that tool again; it is reported as "
        f"'> S s' (default {DEFAULT_CAP:.0f}: the tools that copy every zero of the 20 GiB "
        "disk would otherwise take most of an hour per round)",
    )
    ap.add_argument("--markdown", type=Path, metavar="FILE", help="write the results table here")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (drop_caches, the lab's files)")
    private: Path | None = None
    if a.private_lab:
        private = Path(tempfile.mkdtemp(prefix="kvm-clone-bench-lab-", dir="/var/tmp"))
        print(f"private lab: kvm-clone lab --dir {private} up", flush=True)
        subprocess.run(
            [
                str(KVM_CLONE),
                "lab",
                "--dir",
                str(private),
                "up",
                "--hosts",
                "2",
                "--base-address",
                a.private_lab,
                "--no-sample-vms",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    try:
        run_all(a, find_lab(private))
    finally:
        if private is not None:
            subprocess.run(
                [str(KVM_CLONE), "lab", "--dir", str(private), "down", "--purge"],
                stdout=subprocess.DEVNULL,
            )
            shutil.rmtree(private, ignore_errors=True)


def run_all(a: argparse.Namespace, lab: Lab) -> None:
    """Make the workload, run every tool ``a.runs`` times, report, clean up."""
    workload = Workload(
        raw_size=int(a.raw_gib * GiB) // MiB * MiB,
        raw_data=int(a.raw_data_gib * GiB) // (8 * MiB) * (8 * MiB),
    )
    tools = [
        t
        for t in build_tools(lab, workload, a.experiment)
        if not a.only or any(o in t.name for o in a.only)
    ]
    digest = full_sha256 if a.full_sha256 else elided_sha256
    outcomes: list[Outcome] = []
    started = datetime.datetime.now().astimezone()
    load_start = os.getloadavg()
    print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    with tempfile.TemporaryDirectory(prefix="kvm-clone-bench-", dir="/var/tmp") as tmp_name:
        tmp = Path(tmp_name)
        try:
            make_workload(lab, workload, tmp)
            sources = [lab.images(SRC) / n for n in workload.names]
            allocated = sum(p.stat().st_blocks * 512 for p in sources)
            digests = {p: digest(p) for p in sources}
            apparent = ", ".join(f"{p.name} {fmt_mib(p.stat().st_size)} MiB" for p in sources)
            print(
                f"source: {apparent} apparent; {fmt_mib(allocated)} MiB allocated",
                flush=True,
            )
            with ssh_agent(lab, tmp) as (env, agent_pid):
                plain_env = {k: v for k, v in env.items() if k != "SSH_AUTH_SOCK"}
                ciphers = negotiated_ciphers(lab, env)
                for hop, cipher in ciphers.items():
                    print(f"cipher: {hop}: {cipher}", flush=True)
                capped: set[str] = set()
                for run in range(a.runs):
                    for tool in tools:
                        if tool.name in capped:
                            continue
                        out = run_tool(
                            lab,
                            workload,
                            tool,
                            env if tool.needs_agent else plain_env,
                            {agent_pid},
                            tmp,
                            digests,
                            digest,
                            a.settle,
                            a.cap,
                        )
                        for attempt in range(2):
                            if out.ok or out.capped:
                                break
                            # On the shared lab, other people's tests kill beta's SSH sessions
                            # and delete files from its pool: such a run is run again.
                            print(
                                f"run {run + 1} {tool.name}: failed ({out.error[:160]}); "
                                f"again ({attempt + 1}/2)",
                                flush=True,
                            )
                            out = run_tool(
                                lab,
                                workload,
                                tool,
                                env if tool.needs_agent else plain_env,
                                {agent_pid},
                                tmp,
                                digests,
                                digest,
                                a.settle,
                                a.cap,
                            )
                        outcomes.append(out)
                        if out.capped:
                            capped.add(tool.name)
                        cpu = ", ".join(
                            f"{k} {v:.1f}"
                            for k, v in sorted(out.cpu.items(), key=lambda kv: -kv[1])[:5]
                        )
                        print(
                            f"run {run + 1} {tool.name:<36} {out.seconds:7.1f} s "
                            f"{allocated / MiB / out.seconds:6.0f} MiB/s  dest "
                            f"{fmt_mib(out.dest_allocated)} MiB  rss {out.rss_mib:5.0f} MiB  "
                            f"content {'ok' if out.content_ok else 'DIFFERENT'}  "
                            f"busy before {100 * out.busy_before:.0f} % during "
                            f"{100 * out.busy:.0f} %  "
                            f"{'' if out.ok else 'FAILED ' + out.error}{out.note}  cpu: {cpu}",
                            flush=True,
                        )
                profiles = {}
                if a.profile:
                    for route in ("relay", "direct"):
                        profiles[route] = py_spy_profile(lab, workload, route, env, tmp)
        finally:
            with contextlib.suppress(Exception):
                clean_destination(lab, workload)
            if not a.keep:
                with contextlib.suppress(Exception):
                    remove_workload(lab, workload)
    table, verdict = summarise(tools, outcomes, allocated, a.runs)
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    header = (
        f"Machine: {os.cpu_count()} vCPUs ({cpu_model}), "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GiB:.0f} GiB RAM, "
        f"Python {platform.python_version()}, {started:%Y-%m-%d %H:%M %Z}. Source data: "
        f"{fmt_mib(allocated)} MiB allocated in {workload.raw_name} "
        f"({workload.raw_size // GiB} GiB raw) + {workload.qcow_name}. "
        f"Command: `.venv/bin/python bench/clone_peers.py {shlex.join(sys.argv[1:])}`. Load "
        f"average (1/5/15 min) at start {' '.join(f'{x:.2f}' for x in load_start)}, at end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}."
    )
    ciphers_md = "\n".join(f"- {hop}: `{c}`" for hop, c in ciphers.items())
    text = f"{header}\n\n{table}\n\n" + "\n".join(f"- {v}" for v in verdict) + "\n\n"
    text += f"Ciphers negotiated:\n\n{ciphers_md}\n"
    for route, rows in profiles.items():
        text += f"\npy-spy, kvm-clone {route} (own time per thread :: function):\n\n"
        text += "\n".join(f"- {share * 100:4.1f} % {fn}" for fn, share in rows) + "\n"
    print("\n" + text)
    if a.markdown:
        a.markdown.write_text(text)


if __name__ == "__main__":
    main()
