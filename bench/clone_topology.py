"""Benchmark: clone direct vs relay over a shaped network (``tc`` in network namespaces).

Run as root from the repository (about 5 minutes with the defaults)::

    .venv/bin/python -m bench.clone_topology [--data-mib 1024] [--runs 2] [--markdown FILE]

The topology (every address below lives only inside namespaces this script creates; ``tc``
only touches their veths, never the machine's interfaces)::

    kcA-op (operator: kvm-clone, and a 20 ms delay line per host on its own 127.0.0.1)
        | veth 10.77.0.2 <-> 10.77.0.1: tbf 100 Mbit/s on both ends
    kcA-rt (router, ip_forward=1)
        | veth, tbf 1 Gbit/s both ends          | veth, tbf 1 Gbit/s both ends
    kcA-h1: alpha's sshd on 10.77.1.2           kcA-h2: beta's sshd on 10.77.2.2

This kernel has no ``sch_netem`` (``CONFIG_NET_SCH_NETEM`` is not set; only tbf, htb, ingress,
u32 and bpf), so the operator link's latency is a delay line in userspace: the operator reaches
each host through ``127.0.0.1:2201/2202`` inside ``kcA-op``, a small asyncio relay that passes
every chunk on, in both directions, ``--op-delay-ms`` after it arrived, over a real TCP
connection through the 100 Mbit/s tbf. What SSH sees is a link with 2 x 20 ms round trip and
100 Mbit/s; what TCP's congestion control sees across the tbf is a short round trip (it does
not have to grow its window to the bandwidth-delay product, which Linux does anyway at 0.5 MB).

1. A lab of its own: ``kvm-clone lab --dir <temp> up --hosts 2 --base-address 127.0.1.2
   --no-sample-vms`` (purged at the end).
2. The four network namespaces, veth pairs, addresses, routes and qdiscs above; the delay lines.
3. For each lab host, a second sshd inside the host's mount (and UTS) namespace and inside its
   host netns (``nsenter --mount --uts --net ... sshd -f <host's sshd_config> -o
   ListenAddress=10.77.x.2``): same host key and authorized keys, same libvirtd (its unix
   socket is reached through SSH, which no network namespace hides).
4. Operator files: ``ssh_config`` + ``known_hosts`` (the hosts' real keys, strict checking) and a
   kvm-clone ``config.yaml`` naming them, with ``hosts.beta.reach_address = 10.77.2.2`` (direct:
   alpha reaches beta over the 1 Gbit/s links, not through the operator's delay line); an
   ``ssh-agent`` with the lab's operator key (direct needs one to forward).
5. The source VM ``topo-src`` on alpha: one raw disk, ``--disk-gib`` virtual, holding
   ``--data-mib`` MiB of random (incompressible) data in 4 extents.
6. ``--runs`` rounds of ``ip netns exec kcA-op kvm-clone clone alpha beta topo-src --new-name
   topo-copy --transfer direct|relay --compress off --output json``, alternating. Before each
   run the destination is cleaned (VM undefined, its files deleted) and the page cache dropped;
   after it the route in kvm-clone's JSON is checked, the copy must be defined on beta and its
   disk's content hash (zero blocks elided, size included) must equal the source's.
7. Always (errors and Ctrl-C/SIGTERM too): stops every process inside the four namespaces, deletes
   the namespaces (their veths and qdiscs go with them), stops the agent, purges the lab.

``--compress off`` because the data is random: zstd would only cost CPU (and ``--compress auto``
would decide from addresses that the delay line distorts: the operator connects to 127.0.0.1).
Results and their analysis: docs/benchmarks.md, section "Clone over a shaped network".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
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
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bench.common.digests import elided_sha256
from bench.common.lab import IMAGES, BenchLab, private_lab
from bench.common.machine import busy_between, cpu_times, drop_caches, load_text, wait_quiet
from bench.common.paths import KVM_CLONE, ROOT
from bench.common.ssh_agent import ssh_agent
from bench.common.units import GiB, MiB
from kvm_clone_tui.engine.config import Config, HostConfig, SSHConfig, save_config

PREFIX = "kcA-"
OP, RT, H1, H2 = (f"{PREFIX}{n}" for n in ("op", "rt", "h1", "h2"))
SRC, DST = "alpha", "beta"
HOST_NS = {SRC: H1, DST: H2}
HOST_ADDR = {SRC: "10.77.1.2", DST: "10.77.2.2"}
PROXY_PORT = {SRC: 2201, DST: 2202}  # the delay lines in kcA-op, on its own 127.0.0.1
VM, COPY = "topo-src", "topo-copy"
SSHD_PID = "/run/sshd-topology.pid"  # inside the host's mount namespace (its private /run)
RUN_TIMEOUT = 900.0


def sh(*argv: str, check: bool = True) -> str:
    """Run a command here; its stdout (raises with stderr when ``check`` and it fails)."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def in_ns(ns: str, *argv: str, check: bool = True) -> str:
    """Run a command inside network namespace ``ns``."""
    return sh("ip", "netns", "exec", ns, *argv, check=check)


# -- the network ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """The links: operator <-> router, and each host <-> router."""

    op_rate: str = "100mbit"
    op_delay_ms: float = 20.0
    host_rate: str = "1gbit"


def _veth(a_ns: str, a_dev: str, a_addr: str, b_ns: str, b_dev: str, b_addr: str) -> None:
    """A veth pair between two namespaces, each end with its /24 address, up."""
    sh("ip", "link", "add", a_dev, "netns", a_ns, "type", "veth", "peer", b_dev, "netns", b_ns)
    for ns, dev, addr in ((a_ns, a_dev, a_addr), (b_ns, b_dev, b_addr)):
        in_ns(ns, "ip", "addr", "add", f"{addr}/24", "dev", dev)
        in_ns(ns, "ip", "link", "set", dev, "up")


def _shape(ns: str, dev: str, rate: str) -> None:
    """tbf on ``dev``'s egress: ``rate``, with a queue deep enough that nothing is dropped at
    these rates (the point is bandwidth, not loss)."""
    burst = "1mb" if _rate_bits(rate) >= 1e9 else "128kb"
    in_ns(ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", burst,
          "latency", "200ms")  # fmt: skip


def build_network(shape: Shape) -> None:
    """Namespaces, veths, addresses, routes, forwarding and qdiscs (see the module doc)."""
    existing = sh("ip", "netns", "list").split()
    clash = [ns for ns in (OP, RT, H1, H2) if ns in existing]
    if clash:
        raise RuntimeError(
            f"network namespaces {clash} exist already (an earlier run that was killed with "
            f"-9?): check `ip netns pids NAME` and remove them with `ip netns del NAME`"
        )
    for ns in (OP, RT, H1, H2):
        sh("ip", "netns", "add", ns)
        in_ns(ns, "ip", "link", "set", "lo", "up")
    in_ns(RT, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    _veth(OP, "op0", "10.77.0.2", RT, "rt-op", "10.77.0.1")
    _veth(H1, "h1-0", "10.77.1.2", RT, "rt-h1", "10.77.1.1")
    _veth(H2, "h2-0", "10.77.2.2", RT, "rt-h2", "10.77.2.1")
    for ns, gw in ((OP, "10.77.0.1"), (H1, "10.77.1.1"), (H2, "10.77.2.1")):
        in_ns(ns, "ip", "route", "add", "default", "via", gw)
    # Both directions of every link: each end shapes what it sends.
    _shape(OP, "op0", shape.op_rate)
    _shape(RT, "rt-op", shape.op_rate)
    for ns, dev in ((H1, "h1-0"), (RT, "rt-h1"), (H2, "h2-0"), (RT, "rt-h2")):
        _shape(ns, dev, shape.host_rate)


def teardown_network() -> None:
    """Stop every process inside our namespaces (by pid), then delete the namespaces."""
    existing = sh("ip", "netns", "list", check=False).split()
    for ns in (OP, H1, H2, RT):
        if ns not in existing:
            continue
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).split()]
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if pids:
                time.sleep(1.0)
        sh("ip", "netns", "del", ns, check=False)


async def _delay_line(listen_port: int, target: str, delay: float) -> None:
    """Accept on 127.0.0.1:``listen_port``, connect to ``target``:22, and pass every chunk on in
    both directions ``delay`` seconds after it arrived (a link's one-way latency)."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=256)

        async def later() -> None:
            while True:
                due, data = await queue.get()
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                if not data:
                    break
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()

        sender = asyncio.ensure_future(later())
        try:
            while data := await reader.read(1 << 16):
                await queue.put((loop.time() + delay, data))  # full queue: back-pressure
        finally:
            await queue.put((loop.time() + delay, b""))
            await sender

    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            h_reader, h_writer = await asyncio.open_connection(target, 22)
            await asyncio.gather(pipe(c_reader, h_writer), pipe(h_reader, c_writer))
        except OSError:
            pass
        finally:
            c_writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


def start_delay_lines(delay_ms: float) -> None:
    """One delay line per host inside kcA-op (killed with every other process of our netns)."""
    for name, port in PROXY_PORT.items():
        subprocess.Popen(
            ["ip", "netns", "exec", OP, sys.executable, "-m", "bench.clone_topology",
             "--delay-line", str(port), HOST_ADDR[name], str(delay_ms / 1000)],
            stdin=subprocess.DEVNULL,
            cwd=ROOT,  # where -m finds the bench package
        )  # fmt: skip
    script = (
        "import socket, sys, time\n"
        "for port in sys.argv[1:]:\n"
        "    for _ in range(100):\n"
        "        try:\n"
        "            socket.create_connection(('127.0.0.1', int(port)), timeout=2).close()\n"
        "            break\n"
        "        except OSError:\n"
        "            time.sleep(0.1)\n"
        "    else:\n"
        "        sys.exit(f'delay line on port {port} did not start')\n"
    )
    in_ns(OP, sys.executable, "-c", script, *(str(p) for p in PROXY_PORT.values()))


_ROUND_TRIP = """
import socket, statistics, sys, time
times = []
for _ in range(5):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
    s.recv(256)  # the server's banner: the connection works end to end
    t0 = time.perf_counter()
    s.sendall(b"SSH-2.0-probe\\r\\n")  # sshd answers our banner with its KEXINIT
    s.recv(256)
    times.append(time.perf_counter() - t0)
    s.close()
print(statistics.median(times) * 1000)
"""


def round_trip(name: str) -> float:
    """Median ms from a request to sshd's reply, from kcA-op through the delay line."""
    return float(in_ns(OP, sys.executable, "-c", _ROUND_TRIP, str(PROXY_PORT[name])))


# -- the hosts' second sshd ------------------------------------------------------------------------


def start_host_sshd(lab: BenchLab, name: str) -> None:
    """sshd of lab host ``name`` inside its mount/UTS namespaces and our host netns."""
    pid = lab.anchor_pid(name)
    host_dir = lab.layout.host_dir(name)
    sh(
        "nsenter",
        f"--mount=/proc/{pid}/ns/mnt",
        f"--uts=/proc/{pid}/ns/uts",
        f"--net=/run/netns/{HOST_NS[name]}",
        f"--root=/proc/{pid}/root",
        f"--wd=/proc/{pid}/cwd",
        "/usr/sbin/sshd",
        "-f",
        str(host_dir / "sshd_config"),
        "-o",
        f"ListenAddress={HOST_ADDR[name]}:22",
        "-o",
        f"PidFile={SSHD_PID}",
        "-E",
        str(host_dir / "sshd-topology.log"),
    )


def write_operator_files(lab: BenchLab, where: Path) -> Path:
    """ssh_config, known_hosts (the hosts' real keys) and config.yaml for the 10.77 addresses;
    returns the config.yaml."""
    known, blocks = [], ["# kvm-clone topology benchmark: the lab hosts on their netns addresses"]
    for name in (SRC, DST):
        key_type, key_data = (
            (lab.layout.host_dir(name) / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        )
        known.append(f"[127.0.0.1]:{PROXY_PORT[name]} {key_type} {key_data}")
        blocks += [
            f"Host {name}",
            "    HostName 127.0.0.1",
            f"    Port {PROXY_PORT[name]}",
            "    User root",
            f"    IdentityFile {lab.layout.operator_key}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {where / 'known_hosts'}",
            "    StrictHostKeyChecking yes",
            "    BatchMode yes",
            "",
        ]
    (where / "known_hosts").write_text("\n".join(known) + "\n")
    (where / "ssh_config").write_text("\n".join(blocks))
    config = where / "config.yaml"
    save_config(
        Config(
            default_hosts=(SRC, DST),
            # Direct: alpha reaches beta on beta's own address (not through the delay line).
            hosts={DST: HostConfig(reach_address=f"root@{HOST_ADDR[DST]}:22")},
            ssh=SSHConfig(
                config_file=str(where / "ssh_config"), known_hosts=str(where / "known_hosts")
            ),
        ),
        config,
    )
    return config


# -- the workload ---------------------------------------------------------------------------------


def make_source(lab: BenchLab, disk_size: int, data: int) -> Path:
    """``topo-src`` on alpha: a raw sparse disk holding ``data`` random bytes in 4 extents."""
    path = lab.images(SRC) / f"{VM}-vda.img"
    extents = 4
    each = data // extents // MiB * MiB
    stride = disk_size // extents // MiB * MiB
    if each > stride:
        raise SystemExit(f"--data-mib {data // MiB} does not fit a {disk_size // GiB} GiB disk")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, disk_size)
        for i in range(extents):
            for off in range(0, each, 8 * MiB):
                os.pwrite(fd, os.urandom(min(8 * MiB, each - off)), i * stride + off)
    finally:
        os.close(fd)
    os.sync()
    xml = (
        f"<domain type='{lab.domain_type()}'><name>{VM}</name>"
        "<memory unit='MiB'>256</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os><devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file='{IMAGES}/{path.name}'/><target dev='vda' bus='virtio'/></disk>"
        "</devices></domain>"
    )
    lab.run(SRC, "virsh", "define", "/dev/stdin", input=xml)
    lab.run(SRC, "virsh", "pool-refresh", "default")
    return path


def clean_destination(lab: BenchLab) -> None:
    """Undefine the copy on beta and delete its files (and any staged ones)."""
    if COPY in lab.run(DST, "virsh", "list", "--all", "--name", check=False).split():
        lab.run(DST, "virsh", "undefine", COPY, check=False)
    for stale in lab.images(DST).glob("*"):
        if stale.name.startswith((f"{COPY}-", ".kvmclone-")):
            stale.unlink()
    lab.run(DST, "virsh", "pool-refresh", "default", check=False)


# -- runs -----------------------------------------------------------------------------------------


@dataclass
class Run:
    """One clone."""

    route: str
    seconds: float
    internal: float
    busy: float
    ok: bool
    error: str = ""


def clone_once(lab: BenchLab, route: str, env: dict[str, str], source_digest: str) -> Run:
    """Clean beta, drop caches, clone from inside kcA-op, check route, definition and hash."""
    clean_destination(lab)
    drop_caches()
    wait_quiet(20)
    argv = [
        "ip", "netns", "exec", OP, str(KVM_CLONE), "clone", SRC, DST, VM, "--new-name", COPY,
        "--transfer", route, "--compress", env["TOPO_COMPRESS"], "--output", "json",
    ]  # fmt: skip
    b0 = cpu_times()
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT)
    seconds = time.perf_counter() - t0
    busy = busy_between(b0, cpu_times())
    if done.returncode != 0:
        return Run(route, seconds, 0, busy, False, (done.stderr or done.stdout).strip()[-300:])
    result = json.loads(done.stdout)["result"]
    run = Run(route, seconds, float(result["seconds"]), busy, True)
    copy = lab.images(DST) / f"{COPY}-vda.img"
    if result["route"] != route:
        run.ok, run.error = False, f"ran via {result['route']}"
    elif COPY not in lab.run(DST, "virsh", "list", "--all", "--name").split():
        run.ok, run.error = False, f"{COPY} is not defined on {DST}"
    elif not copy.exists() or elided_sha256(copy) != source_digest:
        run.ok, run.error = False, f"{copy.name} differs from the source"
    return run


def _sigterm(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # run the finally blocks


def main() -> None:
    """Parse arguments; build the lab, the network and the source; clone; report; tear down."""
    if sys.argv[1:2] == ["--delay-line"]:  # internal: run by start_delay_lines in kcA-op
        port, target, delay = sys.argv[2:5]
        asyncio.run(_delay_line(int(port), target, float(delay)))
        return
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The topology and the steps are described at the top of bench/clone_topology.py.",
    )
    ap.add_argument("--runs", type=int, default=2, help="runs per route (default 2)")
    ap.add_argument("--data-mib", type=int, default=1024, help="random data in the disk (1024)")
    ap.add_argument("--disk-gib", type=int, default=4, help="virtual size of the disk (4)")
    ap.add_argument("--op-rate", default="100mbit", help="operator link rate (100mbit)")
    ap.add_argument(
        "--op-delay-ms", type=float, default=20.0, help="operator link latency, each way (20)"
    )
    ap.add_argument("--host-rate", default="1gbit", help="host-to-router links (1gbit)")
    ap.add_argument("--compress", choices=("off", "auto", "on"), default="off")
    ap.add_argument("--base-address", default="127.0.1.2", help="the private lab's first IP")
    ap.add_argument("--markdown", type=Path, metavar="FILE", help="write the results here")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (network namespaces, tc, the lab)")
    for tool in ("ip", "tc", "nsenter", "ssh-agent"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing (apt-get install iproute2 util-linux openssh-client)")
    signal.signal(signal.SIGTERM, _sigterm)
    shape = Shape(a.op_rate, a.op_delay_ms, a.host_rate)
    started = datetime.datetime.now().astimezone()
    load_start = os.getloadavg()
    print(f"load average at start: {load_text(load_start)}", flush=True)
    runs: list[Run] = []
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(private_lab(a.base_address, prefix="kvm-clone-topology-lab-"))
        stack.callback(teardown_network)
        build_network(shape)
        for name in (SRC, DST):
            start_host_sshd(lab, name)
        start_delay_lines(shape.op_delay_ms)
        rtt = round_trip(SRC)
        print(f"round trip operator -> alpha's sshd -> operator: {rtt:.1f} ms", flush=True)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kvm-clone-topo-")))
        config = write_operator_files(lab, tmp)
        t0 = time.perf_counter()
        source = make_source(lab, a.disk_gib * GiB, a.data_mib * MiB)
        source_digest = elided_sha256(source)
        allocated = source.stat().st_blocks * 512
        print(
            f"source: {source.name} {a.disk_gib} GiB virtual, {allocated / MiB:.0f} MiB "
            f"allocated (random), made in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        env, _agent_pid = stack.enter_context(ssh_agent(lab, tmp))
        env = {
            **env,
            "KVM_CLONE_CONFIG": str(config),
            "KVM_CLONE_STATE_DIR": str(tmp / "state"),
            "TOPO_COMPRESS": a.compress,
        }
        for i in range(a.runs):
            for route in ("direct", "relay"):
                run = clone_once(lab, route, env, source_digest)
                runs.append(run)
                print(
                    f"run {i + 1} {route:<6} {run.seconds:6.1f} s (internal {run.internal:.1f} s)"
                    f" {allocated / MiB / run.seconds:6.1f} MiB/s  machine busy "
                    f"{100 * run.busy:.0f} %  {'ok' if run.ok else 'FAILED: ' + run.error}",
                    flush=True,
                )
        with contextlib.suppress(Exception):
            clean_destination(lab)
    load_end = os.getloadavg()
    text = report(a, shape, runs, allocated, started, load_start, load_end, rtt)
    print("\n" + text)
    if a.markdown:
        a.markdown.write_text(text)
    if not all(r.ok for r in runs):
        sys.exit(1)


def report(
    a: argparse.Namespace,
    shape: Shape,
    runs: list[Run],
    allocated: int,
    started: datetime.datetime,
    load_start: tuple[float, float, float],
    load_end: tuple[float, float, float],
    rtt: float,
) -> str:
    """The results as Markdown: conditions, a table, the verdict."""
    rows = [
        "| route | runs ok | min / median / max s | median MiB/s | internal s (median) "
        "| machine busy (median) |",
        "|---|---|---|---|---|---|",
    ]
    medians: dict[str, float] = {}
    for route in ("direct", "relay"):
        ok = [r for r in runs if r.route == route and r.ok]
        total = sum(1 for r in runs if r.route == route)
        if not ok:
            rows.append(f"| {route} | 0/{total} | - | - | - | - |")
            continue
        secs = sorted(r.seconds for r in ok)
        med = statistics.median(secs)
        medians[route] = med
        rows.append(
            f"| `--transfer {route}` | {len(ok)}/{total} | {secs[0]:.1f} / {med:.1f} / "
            f"{secs[-1]:.1f} | {allocated / MiB / med:.1f} | "
            f"{statistics.median(r.internal for r in ok):.1f} | "
            f"{100 * statistics.median(r.busy for r in ok):.0f} % |"
        )
    floor = allocated * 8 / _rate_bits(shape.op_rate)
    lines = [
        f"- date: {started:%Y-%m-%d %H:%M %Z}; machine: {os.cpu_count()} vCPUs, Python "
        f"{platform.python_version()}; load average (1/5/15 min) at start "
        f"{load_text(load_start)}, at end {load_text(load_end)}",
        f"- links: operator <-> router {shape.op_rate} (tbf) + {shape.op_delay_ms:g} ms each way "
        "(delay line) "
        f"(measured round trip operator -> alpha's sshd {rtt:.1f} ms), hosts <-> router "
        f"{shape.host_rate}",
        f"- source: one raw disk, {a.disk_gib} GiB virtual, {allocated / MiB:.0f} MiB of random "
        f"data; `--compress {a.compress}`; relay's floor at {shape.op_rate}: {floor:.1f} s",
        f"- command: `.venv/bin/python -m bench.clone_topology {shlex.join(sys.argv[1:])}`",
        "",
        *rows,
        "",
    ]
    if "direct" in medians and "relay" in medians:
        ratio = medians["relay"] / medians["direct"]
        verdict = "met" if ratio >= 5 else "missed"
        lines.append(f"Direct is **{ratio:.1f}x** faster than relay by median (target >= 5x: "
                     f"{verdict}).")  # fmt: skip
    return "\n".join(lines) + "\n"


def _rate_bits(rate: str) -> float:
    """``100mbit`` -> 1e8 (tc's units: kbit, mbit, gbit; decimal)."""
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bit": 1.0}
    for suffix, factor in units.items():
        if rate.endswith(suffix):
            return float(rate[: -len(suffix)]) * factor
    raise SystemExit(f"rate {rate!r}: use a number with kbit, mbit or gbit (as tc does)")


if __name__ == "__main__":
    main()
