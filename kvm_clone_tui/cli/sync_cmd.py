"""``kvm-clone sync SRC DST VM``: bring an earlier clone up to date."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console

from kvm_clone_tui.api.client import KVMCloneClient
from kvm_clone_tui.api.config import ConfigError, load_config, parse_bandwidth
from kvm_clone_tui.api.errors import KVMCloneError, SyncRefused
from kvm_clone_tui.api.events import EventCallback
from kvm_clone_tui.api.options import SyncOptions
from kvm_clone_tui.api.plans import SyncPlan
from kvm_clone_tui.api.results import SyncResult
from kvm_clone_tui.api.units import format_bytes
from kvm_clone_tui.api.validation import ValidationError, parse_host_spec, validate_vm_name
from kvm_clone_tui.cli.documents import document, sync_plan_data, sync_result_data
from kvm_clone_tui.cli.exit_codes import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
)
from kvm_clone_tui.cli.job_output import report_failure, run_with_progress
from kvm_clone_tui.cli.logs import job_logger
from kvm_clone_tui.cli.output import dump

DESCRIPTION = """\
Bring the clone of VM on DST (made by `kvm-clone clone`) up to date with the source, moving
only what changed. Two ways to find what changed:

  bitmap  the clone (or the last sync) left a checkpoint on the source: QEMU has recorded
          every block written since in a dirty bitmap, so only those blocks are read and sent;
          the time does not grow with the disk's size. Needs qcow2 disks without backing
          chains, a clone nobody started or changed since, and an intact checkpoint. Works
          while the source runs (an incremental backup at one point in time).
  hash    both hosts hash 64 KiB blocks of each disk file on their own CPU; only the blocks
          that differ cross the network, blocks that became zero are punched out. Works for
          any file; the source must be shut down.

--mode auto (the default) takes bitmap mode when it is valid and says why when it is not. After
every verified sync a new checkpoint replaces the old one. The clone's definition follows the
source's (memory, vCPUs, devices) and keeps its name, UUID, MAC addresses and disk paths. The
clone must be shut down.

The clone is marked as being synced while blocks are written: an interrupted sync never passes
for a finished one, and running the same sync again resumes and completes it. With --checkpoint
the old contents of every block the sync overwrites are kept in the clone's pool: a failed sync
puts the clone back at once, and `kvm-clone revert DST VM` undoes the last sync later.
"""

EPILOG = """\
examples:
  kvm-clone sync alpha beta web01                 the clone is called web01 on beta too
  kvm-clone sync alpha beta web01 --target-name web01-dr --dry-run
  kvm-clone sync alpha beta web01 --output json | jq .result.changed_bytes
  kvm-clone sync alpha beta web01 --checkpoint    then, if the new state is bad:
  kvm-clone revert beta web01                     the clone as it was before that sync

exit codes:
  0    synced          1  failed (run it again to resume)      2  bad usage
  4    refused (not a clone of VM, running VMs, ...): nothing changed     130  interrupted
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``sync``."""
    p = subparsers.add_parser(
        "sync",
        help="bring an earlier clone up to date (only what changed)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SRC", help="host of the source VM")
    p.add_argument("dest", metavar="DST", help="host of the clone")
    p.add_argument("vm", metavar="VM", help="the source VM's name")
    p.add_argument("--target-name", metavar="NAME", help="the clone's name (default: VM)")
    p.add_argument(
        "--mode",
        choices=("auto", "bitmap", "hash"),
        help="auto (default: bitmap when valid, else hash), bitmap (refuse when it is not "
        "valid) or hash (compare block hashes on both hosts)",
    )
    p.add_argument(
        "--checkpoint",
        action="store_true",
        help="keep what the sync overwrites so that `kvm-clone revert` can undo it",
    )
    p.add_argument(
        "--transfer",
        choices=("auto", "direct", "relay"),
        help="direct: SRC sends straight to DST (needs your SSH agent); "
        "relay: through this machine; auto: direct when possible",
    )
    p.add_argument("--bandwidth-limit", metavar="RATE", help="bytes per second: 100M")
    p.add_argument("--dry-run", action="store_true", help="check and print the plan only")
    p.add_argument("--output", "-o", choices=("text", "json"), default="text")
    p.set_defaults(run=run)


async def _run(
    args: argparse.Namespace, overrides: dict[str, Any], on_event: EventCallback | None
) -> SyncPlan | SyncResult:
    async with KVMCloneClient(load_config()) as client:
        options = client.sync_options(**overrides)
        if args.dry_run:
            return await client.plan_sync(args.source, args.dest, args.vm, options)
        return await client.sync_vm(
            args.source, args.dest, args.vm, options, on_event=on_event, check=True
        )


def run(args: argparse.Namespace) -> int:
    """Run ``sync``; see EPILOG for exit codes."""
    console = Console(stderr=args.output == "json")
    try:
        for host in (args.source, args.dest):
            parse_host_spec(host)
        validate_vm_name(args.vm)
        if args.target_name is not None:
            validate_vm_name(args.target_name)
        overrides: dict[str, Any] = {"target_name": args.target_name, "mode": args.mode}
        overrides["checkpoint"] = args.checkpoint or None
        overrides["transfer"] = args.transfer
        if args.bandwidth_limit:
            overrides["bandwidth_limit"] = parse_bandwidth(args.bandwidth_limit)
    except (ValidationError, ConfigError, ValueError) as exc:
        print(f"kvm-clone sync: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        job_log = job_logger("sync", host=args.dest, source=args.source, dest=args.dest, vm=args.vm)
        outcome = run_with_progress(
            lambda on_event: _run(args, overrides, on_event), args.output, console, job_log
        )
    except KeyboardInterrupt:
        if args.checkpoint:
            print(
                "kvm-clone sync: interrupted: the clone was put back as it was before (see the "
                "log above); run it again to sync",
                file=sys.stderr,
            )
        else:
            print("kvm-clone sync: interrupted: run it again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SyncRefused as exc:
        return _report_plan(args, exc.plan, console)
    except (KVMCloneError, ValidationError) as exc:
        report_failure("sync", exc, args.output)
        return EXIT_FAILED
    if isinstance(outcome, SyncPlan):
        return _report_plan(args, outcome, console)
    if args.output == "json":
        print(dump(document(ok=True, result=sync_result_data(outcome)), "json"))
    else:
        console.print(
            f"synced {outcome.vm} -> {outcome.dest_host}:{outcome.target}: "
            f"{format_bytes(outcome.changed_bytes)} changed, "
            f"{format_bytes(outcome.bytes_sent)} sent in {outcome.seconds:.1f} s "
            f"({outcome.mode} mode: {outcome.mode_reason})"
            + (f", {outcome.consistency}" if outcome.consistency else "")
            + ("; `kvm-clone revert` can undo it" if outcome.revertible else ""),
            highlight=False,
        )
    return EXIT_OK


def _report_plan(args: argparse.Namespace, plan: SyncPlan, console: Console) -> int:
    if args.output == "json":
        print(dump(document(ok=plan.ok, plan=sync_plan_data(plan)), "json"))
    else:
        console.print(plan.describe(), highlight=False, markup=False, soft_wrap=True)
    if not plan.ok:
        print("kvm-clone sync: refused: " + "; ".join(map(str, plan.conflicts)), file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK


__all__ = ["SyncOptions", "add_parser", "run"]
