"""The ways the clone benchmark copies the two disks alpha -> beta: kvm-clone (relay, direct)
and the peers (ssh cat, scp -3, rsync, tar, virsh vol-download/upload), each as pipelines of
commands, and the runner that stops a pipeline at its deadline."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.clone_peers.workload import COPY, VM, Workload
from bench.common.lab import DST, IMAGES, SRC, BenchLab
from bench.common.paths import KVM_CLONE
from bench.common.processes import kill_tree


@dataclass
class Step:
    """One pipeline: commands whose stdout feeds the next one's stdin."""

    commands: list[list[str]]
    pidfiles: list[Path] = field(default_factory=list)  # remote pids to kill at the cap


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
                            kill_tree(int(pidfile.read_text().split()[0]))
                    for q in procs:
                        if q.returncode is None:
                            kill_tree(q.pid)
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


def build_tools(lab: BenchLab, workload: Workload, experiment: bool = False) -> list[Tool]:
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


def dest_files(lab: BenchLab, workload: Workload, tool: Tool) -> list[tuple[Path, Path]]:
    """(source, destination) pairs as seen from this machine."""
    src, dst = lab.images(SRC), lab.images(DST)
    if tool.route:
        return [
            (src / workload.raw_name, dst / f"{COPY}-vda.img"),
            (src / workload.qcow_name, dst / f"{COPY}-vdb.qcow2"),
        ]
    return [(src / n, dst / n) for n in workload.names]
