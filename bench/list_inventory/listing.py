"""Part 1: ``kvm-clone list`` and ``KVMCloneClient.list_vms`` over every host, and profiles."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import kvm_clone_tui.engine.inventory as inventory_module
from bench.common.lab import BenchLab
from bench.common.paths import KVM_CLONE
from bench.common.progress import log
from bench.common.stats import Summary
from bench.list_inventory.reads import ReadCounter, counting_reads
from kvm_clone_tui.api.client import KVMCloneClient
from kvm_clone_tui.engine.config import Config, load_config


def time_cli(args: Sequence[str], env: dict[str, str], check: Callable[[str], None]) -> float:
    """Wall time of one ``kvm-clone ARGS`` process; ``check`` validates its stdout."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [str(KVM_CLONE), *args], env=env, capture_output=True, text=True, timeout=300
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"kvm-clone {' '.join(args)} exited {done.returncode}: {done.stderr}")
    check(done.stdout)
    return seconds


def check_listing(hosts: Sequence[str], vms: int) -> Callable[[str], None]:
    """A check that the JSON listing names every host with ``vms`` VMs."""

    def check(stdout: str) -> None:
        data = json.loads(stdout)
        counts = {h["host"]: len(h.get("vms", ())) for h in data["hosts"]}
        expected = dict.fromkeys(hosts, vms)
        if counts != expected:
            raise RuntimeError(f"listing has {counts}, expected {expected}")

    return check


async def list_in_process(
    config: Config, hosts: Sequence[str], vms: int, counter: ReadCounter
) -> dict[str, float]:
    """One cold ``list_vms`` (new client), then the SSH logins alone, then a warm one."""
    result: dict[str, float] = {}
    before = counter.snapshot()[0]
    async with KVMCloneClient(config) as client:
        t0 = time.perf_counter()
        listings = await client.list_vms(hosts)
        result["cold"] = time.perf_counter() - t0
        result["cold_full_reads"] = counter.snapshot()[0] - before
        for listing in listings:
            if listing.inventory is None or len(listing.inventory.vms) != vms:
                raise RuntimeError(f"{listing.host}: {listing.error or 'wrong VM count'}")
        before = counter.snapshot()[0]
        t0 = time.perf_counter()
        await client.list_vms(hosts)
        result["warm"] = time.perf_counter() - t0
        result["warm_full_reads"] = counter.snapshot()[0] - before
    async with KVMCloneClient(config) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(client.host(h) for h in hosts))
        result["connect"] = time.perf_counter() - t0
    return result


def profile_cold_list(config: Config, hosts: Sequence[str], top: int) -> str:
    """cProfile of one cold in-process ``list_vms``: the top entries by own time."""

    async def once() -> None:
        async with KVMCloneClient(config) as client:
            await client.list_vms(hosts)

    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(once())
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def import_profile(top: int, max_depth: int = 4) -> str:
    """``python -X importtime`` of ``kvm-clone --version``: the slowest imports (cumulative),
    down to ``max_depth`` levels below ``kvm_clone_tui.cli.main``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "kvm_clone_tui", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    entries = []
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        if depth <= max_depth:
            entries.append((int(parts[1]), depth, name.strip()))
    entries.sort(reverse=True)
    lines = [f"{'cumulative ms':>13}  module (indent = import depth)"]
    lines += [f"{us / 1000:13.0f}  {'  ' * depth}{name}" for us, depth, name in entries[:top]]
    return "\n".join(lines) + "\n"


def profile_one_read(config: Config, host: str, top: int) -> str:
    """cProfile of the per-domain part of a full read of ``host``: ``read_vm`` with the host
    facts for every domain, as ``read_inventory_parallel`` does it, but one after the other in
    one libvirt worker thread so that one profiler sees every libvirt call (each is one round
    trip through SSH): how many calls a VM costs and how long each takes."""

    def profiled(conn: Any) -> tuple[float, int, cProfile.Profile]:
        stats = conn.getAllDomainStats(inventory_module._STATS, 0)
        facts = inventory_module.read_facts(conn)
        profiler = cProfile.Profile()
        t0 = time.perf_counter()
        profiler.enable()
        try:
            for dom, dom_stats in stats:
                inventory_module.read_vm(conn, dom, dom_stats, facts)
        finally:
            profiler.disable()
        return time.perf_counter() - t0, len(stats), profiler

    async def once() -> tuple[float, int, cProfile.Profile]:
        async with KVMCloneClient(config) as client:
            return await (await client.host(host)).libvirt.call(profiled)

    seconds, domains, profiler = asyncio.run(once())
    out = io.StringIO()
    out.write(f"read_vm of the {domains} domains of {host}, one at a time: {seconds:.2f} s\n")
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def bench_listing(
    lab: BenchLab, hosts: Sequence[str], args: argparse.Namespace, results: dict[str, Any]
) -> None:
    """Part 1: ``kvm-clone list`` and ``list_vms`` over every host."""
    config_path = lab.require_config()
    env = dict(os.environ, KVM_CLONE_CONFIG=str(config_path))
    list_args = ["list", *hosts, "--output", "json"]
    results["list_command"] = f"KVM_CLONE_CONFIG={config_path} kvm-clone {' '.join(list_args)}"
    check = check_listing(hosts, args.vms)

    log("kvm-clone --version (Python start-up and imports only)")
    startup = [time_cli(["--version"], env, lambda _out: None) for _ in range(args.runs)]
    results["startup"] = Summary(tuple(startup))

    log(f"kvm-clone list: 1 warm-up + {args.runs} runs")
    results["cli_first"] = time_cli(list_args, env, check)
    cli = []
    for i in range(args.runs):
        cli.append(time_cli(list_args, env, check))
        log(f"  run {i + 1}: {cli[-1]:.2f} s")
    results["cli"] = Summary(tuple(cli))

    config = load_config(config_path)
    log(f"KVMCloneClient.list_vms in process: {args.runs} runs")
    runs = []
    with counting_reads() as counter:
        for _ in range(args.runs):
            runs.append(asyncio.run(list_in_process(config, hosts, args.vms, counter)))
    for key in ("cold", "warm", "connect"):
        results[f"api_{key}"] = Summary(tuple(r[key] for r in runs))
    results["api_cold_full_reads"] = int(runs[0]["cold_full_reads"])
    results["api_warm_full_reads"] = int(runs[0]["warm_full_reads"])
    results["full_read_seconds"] = Summary(tuple(counter.full_seconds))

    if args.profile:
        log("profiling one cold list_vms (cProfile)")
        results["profile"] = profile_cold_list(config, hosts, args.profile)
        results["profile_read"] = profile_one_read(config, hosts[0], args.profile)
        results["profile_imports"] = import_profile(args.profile)
