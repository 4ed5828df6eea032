"""Throughput of the host agent on this machine: send -> /dev/null and send | receive.

    .venv/bin/python -m bench.agent_throughput [--dir DIR] [--size-mib 2048] [--runs 3]
        [--python /usr/bin/python3]

(``.venv/bin/python bench/agent_throughput.py ...`` works too: it imports nothing from bench.)

Makes a file of random data (page-cached after the first read) and a sparse image, then times
the agent as the hosts run it (``python3 agent.pyz ...``, the zipapp the client ships). Results:
docs/agent.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kvm_clone_tui.agent import AGENT_ZIP

MiB = 1 << 20


_HASH_ONLY = """
import hashlib, os, time
b, h = bytearray(os.urandom(4 << 20)), hashlib.blake2b(digest_size=32)
t = time.perf_counter()
for _ in range(256):
    h.update(b)
print(round(1024 / (time.perf_counter() - t)))
"""


def timed(cmd: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of all the processes) of a shell pipeline."""
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd],
        check=True,
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime


def report(name: str, mib: float, runs: list[tuple[float, float]]) -> None:
    """One result line: median and best MiB/s, CPU seconds per GiB."""
    rates = sorted(mib / wall for wall, _ in runs)
    cpu = statistics.median(c for _, c in runs) / (mib / 1024)
    print(
        f"{name:<44} {mib:>7.0f} MiB  median {statistics.median(rates):6.0f} MiB/s"
        f"  best {rates[-1]:6.0f} MiB/s  CPU {cpu:4.2f} s/GiB  ({len(runs)} runs)"
    )


def main() -> None:
    """Make the test files, time the agent's send and receive, print the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="where to put the test files (a local disk)")
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--python", default=sys.executable)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # still remove the temporary files
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        agent = Path(tmp, "agent.pyz")
        agent.write_bytes(AGENT_ZIP)
        py = f"{a.python} {agent}"
        src, dst, sparse = Path(tmp, "random.img"), Path(tmp, "out", "dst.img"), Path(tmp, "s.img")
        dst.parent.mkdir()
        with src.open("wb") as f:
            for _ in range(a.size_mib):
                f.write(os.urandom(MiB))
        with sparse.open("wb") as f:  # 8x virtual size, 1/8 of it data in 64 MiB runs
            f.truncate(8 * a.size_mib * MiB)
            for i in range(0, 8 * a.size_mib, 512):
                f.seek(i * MiB)
                f.write(os.urandom(64 * MiB))
        subprocess.run(["cat", str(src), str(sparse)], stdout=subprocess.DEVNULL, check=True)
        mib = a.size_mib
        ceiling = subprocess.run([a.python, "-c", _HASH_ONLY], capture_output=True, text=True)
        print(f"blake2b-256 alone, in memory (the ceiling)  {ceiling.stdout.strip()} MiB/s")
        report(
            "send -> /dev/null", mib, [timed(f"{py} send {src} >/dev/null") for _ in range(a.runs)]
        )
        recv = f"{py} receive {dst} --root {dst.parent} --size"
        times = []
        for _ in range(a.runs):
            dst.unlink(missing_ok=True)
            subprocess.run(["sync"], check=True)
            times.append(timed(f"{py} send {src} | {recv} {src.stat().st_size}"))
        report("send | receive (local disk, fsync)", mib, times)
        times = []
        for _ in range(a.runs):
            dst.unlink(missing_ok=True)
            subprocess.run(["sync"], check=True)
            times.append(timed(f"{py} send {sparse} | {recv} {sparse.stat().st_size}"))
        report(f"send | receive sparse {8 * mib} MiB virtual, data", mib, times)
        report("  same, counted as virtual size", 8 * mib, times)


if __name__ == "__main__":
    main()
