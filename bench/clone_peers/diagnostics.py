"""Where the clone's time goes: the ciphers each hop negotiates, and kvm-clone under py-spy."""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from pathlib import Path

from bench.clone_peers.workload import COPY, VM, Workload, clean_destination
from bench.common.lab import DST, SRC, BenchLab
from bench.common.machine import drop_caches
from bench.common.paths import KVM_CLONE, ROOT


def negotiated_ciphers(lab: BenchLab, env: dict[str, str]) -> dict[str, str]:
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
    lab: BenchLab, workload: Workload, route: str, env: dict[str, str], tmp: Path
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
