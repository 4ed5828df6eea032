"""``python -m bench.clone_peers``: make the workload, run every tool ``--runs`` times, report.

The benchmark itself is described in the package's docstring (``bench/clone_peers/__init__.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import bench.clone_peers
from bench.clone_peers.diagnostics import negotiated_ciphers, py_spy_profile
from bench.clone_peers.report import Outcome, summarise
from bench.clone_peers.sampler import Sampler
from bench.clone_peers.tools import Tool, build_tools, dest_files, run_pipeline
from bench.clone_peers.workload import Workload, clean_destination, make_workload, remove_workload
from bench.common.digests import elided_sha256, full_sha256
from bench.common.lab import SRC, BenchLab, find_lab, private_lab
from bench.common.machine import drop_caches, load_text, machine_summary, wait_quiet
from bench.common.ssh_agent import ssh_agent
from bench.common.units import GiB, MiB, mib

DEFAULT_CAP = 180.0
KVM_CLONE_TIMEOUT = 300.0  # kvm-clone: not subject to --cap; 5x what 2.3 GiB needs at 40 MiB/s
DEFAULT_PRIVATE_LAB = "127.0.0.70"


def run_tool(
    lab: BenchLab,
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


def main() -> None:
    """Parse arguments, make the workload, run every tool ``--runs`` times, report, clean up."""
    ap = argparse.ArgumentParser(
        description=bench.clone_peers.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Workload, tools and measurements are described above (bench/clone_peers/"
        "__init__.py).",
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
        const=DEFAULT_PRIVATE_LAB,
        metavar="IP",
        help=f"bring up a lab of our own (alpha, beta from IP, default {DEFAULT_PRIVATE_LAB}) and "
        "tear it "
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
    if not a.private_lab:
        run_all(a, find_lab())
        return
    with private_lab(
        a.private_lab,
        prefix="kvm-clone-bench-lab-",
        announce=lambda root: print(f"private lab: kvm-clone lab --dir {root} up", flush=True),
    ) as lab:
        run_all(a, lab)


def run_all(a: argparse.Namespace, lab: BenchLab) -> None:
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
            apparent = ", ".join(f"{p.name} {mib(p.stat().st_size)} MiB" for p in sources)
            print(
                f"source: {apparent} apparent; {mib(allocated)} MiB allocated",
                flush=True,
            )
            with ssh_agent(lab, tmp) as (env, agent_pid):
                plain_env = {k: v for k, v in env.items() if k != "SSH_AUTH_SOCK"}
                ciphers = negotiated_ciphers(lab, env)
                for hop, cipher in ciphers.items():
                    print(f"cipher: {hop}: {cipher}", flush=True)
                capped: set[str] = set()

                def once(tool: Tool) -> Outcome:
                    tool_env = env if tool.needs_agent else plain_env
                    return run_tool(
                        lab, workload, tool, tool_env, {agent_pid}, tmp, digests, digest,
                        a.settle, a.cap,
                    )  # fmt: skip

                for run in range(a.runs):
                    for tool in tools:
                        if tool.name in capped:
                            continue
                        out = once(tool)
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
                            out = once(tool)
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
                            f"{mib(out.dest_allocated)} MiB  rss {out.rss_mib:5.0f} MiB  "
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
    header = (
        f"Machine: {machine_summary()}, {started:%Y-%m-%d %H:%M %Z}. Source data: "
        f"{mib(allocated)} MiB allocated in {workload.raw_name} "
        f"({workload.raw_size // GiB} GiB raw) + {workload.qcow_name}. "
        f"Command: `.venv/bin/python -m bench.clone_peers {shlex.join(sys.argv[1:])}`. Load "
        f"average (1/5/15 min) at start {load_text(load_start)}, at end "
        f"{load_text(os.getloadavg())}."
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
