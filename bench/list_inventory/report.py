"""The listing benchmark's results as plain text, or as Markdown for docs/benchmarks.md."""

from __future__ import annotations

import argparse
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common.machine import cpu_model
from bench.common.stats import Summary
from bench.common.tables import aligned_table, markdown_table

TARGET_LIST_SECONDS = 1.5  # the target: 3 hosts x 200 VMs, SSH logins included


def machine() -> str:
    """A one-line description of this machine."""
    return (
        f"{os.cpu_count()} cores ({cpu_model('unknown CPU')}), Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> list[str]:
    """A Markdown table, or aligned plain-text columns."""
    return markdown_table(header, rows) if markdown else aligned_table(header, rows)


def _med_max(summary: Summary) -> str:
    """``median (max)`` in milliseconds."""
    return f"{summary.median * 1000:.0f} ({summary.max * 1000:.0f})"


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages (other people's work on the machine skews
    timings)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report(results: dict[str, Any], args: argparse.Namespace, markdown: bool) -> str:
    """The results as plain text, or as Markdown for docs/benchmarks.md."""
    hosts, vms, tv = args.hosts, args.vms, args.tracker_vms
    lines = [
        f"date: {results['date']}",
        f"machine: {results['machine']}",
        f"load average (1/5/15 min) at start: {results['loadavg']}; "
        f"at end: {results.get('loadavg_end', '?')}",
        f"command: `{results['command']}`",
        f"set-up: lab up ({hosts} hosts) {results['lab_up']:.1f} s; "
        f"defining {hosts} x {vms} VMs {results['define_seconds']:.1f} s",
    ]
    if markdown:
        lines = [f"- {line}" for line in lines]
    out = [*lines, ""]
    rows: list[tuple[str, str]] = []
    if "cli" in results:
        verdict = "meets" if results["cli"].median < TARGET_LIST_SECONDS else "MISSES"
        rows += [
            ("`kvm-clone --version` (Python start-up + imports)", results["startup"].ms()),
            (
                f"`kvm-clone list` {hosts} hosts x {vms} VMs, JSON: first run",
                f"{results['cli_first']:.2f} s",
            ),
            (
                f"`kvm-clone list` {hosts} hosts x {vms} VMs, JSON (wall, whole process)",
                f"{results['cli'].s()} ({verdict} the {TARGET_LIST_SECONDS} s target)",
            ),
            (
                f"`list_vms` cold (new client: SSH logins + libvirt + reads); "
                f"{results['api_cold_full_reads']} full reads",
                results["api_cold"].s(),
            ),
            (
                f"SSH logins + libvirt connections alone ({hosts} hosts in parallel)",
                results["api_connect"].s(),
            ),
            (
                f"`list_vms` warm (connections open); {results['api_warm_full_reads']} full reads",
                results["api_warm"].s(),
            ),
            (
                f"one full read of {vms} VMs (`read_inventory_parallel`, {hosts} hosts at once)",
                results["full_read_seconds"].s(),
            ),
        ]
    if "relist" in results:
        rows += [
            (
                f"full read of {tv} VMs on the host itself (sequential `read_inventory`, "
                "local socket, no SSH)",
                results["local_read"].s(),
            ),
            (
                f"tracker: first read of {tv} VMs (SSH login included)",
                f"{results['tracker_initial']:.2f} s",
            ),
            (
                f"full re-list of {tv} VMs (`tracker.refresh()`, connection open)",
                results["relist"].s(),
            ),
            (
                f"full re-list of {tv} VMs (`list_vms([host])`, connection open)",
                results["relist_api"].s(),
            ),
            (
                "one single-VM re-read (`read_one_vm`, every one of the run)",
                results["single_read_seconds"].ms(),
            ),
            (
                "`read_one_vm` of a running VM, nothing else happening",
                results["steady_running"].ms(),
            ),
            ("`read_one_vm` of a shut-off VM, nothing else happening", results["steady_off"].ms()),
            (
                "event on the loop -> updated inventory, all one-at-a-time actions",
                results["tracker_all"].ms(),
            ),
            (
                f"burst: start {args.burst} VMs; last call returned -> all running in the tracker",
                f"{results['burst_start'] * 1000:.0f} ms",
            ),
            (
                f"burst: stop {args.burst} VMs; last call returned -> all shut off in the tracker",
                f"{results['burst_stop'] * 1000:.0f} ms",
            ),
            (
                "full reads (`read_inventory_parallel`) from the tracker's creation to the end "
                "of the events",
                f"{results['tracker_full_reads']}",
            ),
            (
                "single-VM reads (`read_one_vm`): after the "
                f"{results['tracker_sequential_actions']} one-at-a-time actions / after the "
                "bursts too",
                f"{results['tracker_sequential_singles']} / {results['tracker_single_reads']}",
            ),
            (
                f"inventory events delivered to the subscriber for {results['tracker_actions']} "
                "actions",
                f"{results['tracker_events']}",
            ),
        ]
    if rows:
        out += _table(["measurement", "min / median / max"], rows, markdown)
    if "relist" in results:
        header = [
            "action (one at a time)",
            "libvirt events",
            "event on loop -> updated",
            "of which queued",
            "of which re-read",
            "call returned -> event on loop",
            "call returned -> updated",
        ]
        lat_rows = [
            [
                f"{kind} x{args.events}",
                results["tracker_raw_events"][kind],
                _med_max(results["tracker_latency"][kind]),
                _med_max(results["tracker_queued"][kind]),
                _med_max(results["tracker_reread"][kind]),
                _med_max(results["tracker_delivery"][kind]),
                _med_max(results["tracker_from_call"][kind]),
            ]
            for kind in results["tracker_latency"]
        ]
        out += ["", f"Live inventory of {tv} VMs, milliseconds, median (max):", ""]
        out += _table(header, lat_rows, markdown)
    text = "\n".join(out)
    if "profile" in results:
        text += "\n\ncProfile of one cold in-process list_vms (top by own time):\n"
        text += results["profile"]
    if "profile_imports" in results:
        text += "\nSlowest imports of `kvm-clone --version` (python -X importtime):\n"
        text += results["profile_imports"]
    if "profile_read" in results:
        text += "\ncProfile of the per-domain reads of one host, in one libvirt worker thread:\n"
        text += results["profile_read"]
    return text
