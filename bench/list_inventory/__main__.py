"""``python -m bench.list_inventory``: bring up the benchmark's lab, define the VMs, run both
parts, report; the lab is torn down whatever happens. What it measures: the package docstring."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any

import bench.list_inventory
from bench.common.lab import PrivateLab
from bench.common.lab_driver import HostDriver, vm_names
from bench.common.progress import log
from bench.common.stats import Summary
from bench.list_inventory.listing import bench_listing
from bench.list_inventory.report import loadavg, machine, report
from bench.list_inventory.tracker import bench_tracker


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=(bench.list_inventory.__doc__ or "").split("\n\n")[0] or None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--vms", type=int, default=200, help="VMs per host for the listing")
    parser.add_argument("--hosts", type=int, default=3, help="lab hosts")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per measurement")
    parser.add_argument(
        "--tracker-vms",
        type=int,
        default=500,
        help="VMs on the first host for the live-inventory part",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=10,
        help="one-at-a-time define/start/stop/undefine actions of each kind",
    )
    parser.add_argument("--burst", type=int, default=10, help="VMs started/stopped in one burst")
    parser.add_argument(
        "--base-address",
        default="127.0.0.60",
        help="loopback address of the benchmark lab's first host",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="state directory for the benchmark lab (default: a new temp dir); "
        "it is purged at the end",
    )
    parser.add_argument("--skip-listing", action="store_true", help="only the live inventory")
    parser.add_argument("--skip-tracker", action="store_true", help="only the listing")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also print the top N cProfile entries of one cold list_vms",
    )
    parser.add_argument("--markdown", action="store_true", help="print results as Markdown")
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    args = parser.parse_args(argv)
    if args.tracker_vms < args.vms or args.tracker_vms < args.events + args.burst:
        parser.error("--tracker-vms must be at least --vms and at least --events + --burst")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the lab is torn down whatever happens."""
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("the benchmark needs root (it runs a lab)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    root = args.dir or Path(tempfile.mkdtemp(prefix="kvm-clone-bench-"))
    lab = PrivateLab(root, args.hosts, args.base_address, log=log)
    drivers: dict[str, HostDriver] = {}
    results: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "loadavg": loadavg(),
        "command": ".venv/bin/python -m bench.list_inventory "
        + shlex.join(list(argv) if argv is not None else sys.argv[1:]),
    }
    try:
        results["lab_up"] = lab.up()
        hosts = lab.bench.names()
        drivers = {h: HostDriver(lab.bench, h) for h in hosts}
        log(f"defining {args.vms} VMs on each of {', '.join(hosts)}")
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            list(
                pool.map(
                    lambda h: drivers[h].request("define_many", names=vm_names(0, args.vms)), hosts
                )
            )
        results["define_seconds"] = time.perf_counter() - t0
        if not args.skip_listing:
            bench_listing(lab.bench, hosts, args, results)
        if not args.skip_tracker:
            bench_tracker(lab.bench, hosts, drivers, args, results)
    except KeyboardInterrupt:
        log("interrupted: tearing the benchmark lab down")
        return 130
    finally:
        results["loadavg_end"] = loadavg()
        for driver in drivers.values():
            driver.close()
        lab.down()
        if args.dir is None and not lab.started:
            with contextlib.suppress(OSError):
                root.rmdir()  # the empty temp dir of a lab that never started
    if args.json:  # first, so that the raw numbers survive a bug in the report
        raw = {k: (list(v.values) if isinstance(v, Summary) else v) for k, v in results.items()}
        for key in (
            "tracker_latency",
            "tracker_from_call",
            "tracker_delivery",
            "tracker_queued",
            "tracker_reread",
        ):
            raw[key] = {k: list(v.values) for k, v in results.get(key, {}).items()}
        args.json.write_text(json.dumps(raw, indent=2, default=str))
    print(report(results, args, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
