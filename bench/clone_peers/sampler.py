"""What a run costs the machine: the client's peak RSS and CPU seconds per kind of process."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from bench.common.machine import cpu_times
from bench.common.processes import descendants, hwm_kib, proc_stat


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
        self._busy0 = cpu_times()
        self.busy_fraction = 0.0

    def __enter__(self) -> Sampler:
        for pid, (_, cpu) in self._snapshot().items():
            self._base[pid] = cpu
        self._busy0 = cpu_times()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._tick()
        b1 = cpu_times()
        total = b1[1] - self._busy0[1]
        self.busy_fraction = (b1[0] - self._busy0[0]) / total if total else 0.0

    def _snapshot(self) -> dict[int, tuple[str, float]]:
        out: dict[int, tuple[str, float]] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                st = proc_stat(name)
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
            self._hwm[p] = max(self._hwm.get(p, 0), hwm_kib(p))
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
