"""``kvm-clone clone SRC DST VM`` and ``kvm-clone recover``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from rich.console import Console

from kvm_clone_tui.api.client import KVMCloneClient
from kvm_clone_tui.api.config import ConfigError, load_config, parse_bandwidth
from kvm_clone_tui.api.errors import CloneRefused, KVMCloneError
from kvm_clone_tui.api.options import CloneOptions
from kvm_clone_tui.api.plans import ClonePlan
from kvm_clone_tui.api.results import CloneResult
from kvm_clone_tui.api.validation import ValidationError, parse_host_spec, validate_vm_name
from kvm_clone_tui.cli.documents import clone_plan_data, clone_result_data, document
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
Clone VM from host SRC to host DST: copy its disks (only the data they hold), verify every
byte by hash while streaming, and define the copy on DST under a new UUID with new MAC
addresses. The copy goes straight from SRC to DST when your SSH agent can be forwarded
(direct), else through this machine (relay).

It is a transaction: files are staged in the destination pool under partial names and only
renamed and defined once all of them arrived intact. Any failure, Ctrl-C or timeout rolls back;
after a crash or kill -9, the next clone of the same VM (or `kvm-clone recover`) finishes the
rollback. With --idempotent, an interrupted run keeps what it staged and the next run (or
`kvm-clone resume`) resumes it: only blocks that are missing or differ from the source are
sent. The source VM is only ever read. Defaults come from the `clone` section of the
config (`kvm-clone config show`).
"""

EPILOG = """\
examples:
  kvm-clone clone alpha beta web01 --dry-run          what would happen, nothing copied
  kvm-clone clone alpha beta web01 --new-name web02 --start
  kvm-clone clone alpha beta db01 --idempotent        safe to re-run: exits 0 if done,
                                                      resumes an interrupted run
  kvm-clone clone alpha beta web01 --force            replace beta's web01 once verified
  kvm-clone clone alpha beta web01 --output json | jq .result.bytes_copied

exit codes:
  0    cloned (or already done with --idempotent)
  1    failed: everything was rolled back (the message says why); with --idempotent a
       failure before the commit keeps the staged files for the next run to resume
  2    bad usage: hostile names, bad options, bad config
  4    refused by the plan (name taken, no space, ...): nothing was copied
  130  interrupted (Ctrl-C): rolled back (--idempotent: kept for the next run to resume)
"""


# Over 80 lines on purpose: a declarative list of the clone command's options.
def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``clone`` and ``recover``."""
    p = subparsers.add_parser(
        "clone",
        help="clone a VM to another host",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SRC", help="source host")
    p.add_argument("dest", metavar="DST", help="destination host (may equal SRC with --new-name)")
    p.add_argument("vm", metavar="VM", help="name of the VM on SRC")
    p.add_argument("--new-name", metavar="NAME", help="name of the clone (default: VM's name)")
    p.add_argument(
        "--pool",
        help="destination storage pool (default: config clone.pool, else the host's default_pool)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan; copy nothing")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing VM of that name on DST, only after the copy is "
        "verified (never deleted first; restored if anything fails)",
    )
    p.add_argument(
        "--idempotent",
        action="store_true",
        help="safe to re-run: succeed without copying when DST already has this clone; "
        "resume an interrupted run of it (only missing or differing blocks are sent); a "
        "failure or Ctrl-C keeps what was staged for the next run",
    )
    p.add_argument("--start", action="store_true", default=None, help="start the clone")
    p.add_argument(
        "--preserve-mac",
        action="store_true",
        default=None,
        help="keep the source's MAC addresses (default: new ones)",
    )
    p.add_argument(
        "--bandwidth-limit",
        metavar="RATE",
        help="bytes per second per disk stream, K/M/G suffixes: 100M",
    )
    p.add_argument(
        "--compress",
        nargs="?",
        const="on",
        choices=("auto", "on", "off"),
        help="zstd in transit; auto: only when data leaves this machine; --compress alone "
        "means on (put it after VM, or write --compress=on)",
    )
    p.add_argument(
        "--transfer",
        choices=("auto", "direct", "relay"),
        help="direct: SRC sends straight to DST (needs your SSH agent); "
        "relay: through this machine; auto: direct when possible",
    )
    p.add_argument("--parallel", type=int, metavar="N", help="disks copied at once")
    verify = p.add_mutually_exclusive_group()
    verify.add_argument(
        "--verify",
        action="store_true",
        help="hash every file on both ends and compare (always on unless --no-verify; "
        "accepted for scripts written for the original kvm-clone)",
    )
    verify.add_argument(
        "--no-verify",
        action="store_true",
        help="skip hashing (faster on slow CPUs; a broken stream goes unnoticed)",
    )
    p.add_argument(
        "--no-checkpoint",
        action="store_true",
        help="leave no checkpoint (dirty bitmap) on the source: syncs of this clone then "
        "compare block hashes instead of reading only the changed blocks",
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="abort after S seconds without progress (not a limit on the whole copy)",
    )
    p.add_argument("--output", "-o", choices=("text", "json"), default="text")
    p.set_defaults(run=run)

    r = subparsers.add_parser(
        "recover",
        help="roll back clones interrupted by a crash or kill -9 (`resume` finishes them)",
        description=(
            "Find the journals of clones that were interrupted (the client was killed, the "
            "machine died) and roll each back on its destination: the partial files are "
            "removed, a VM defined by the job is undefined, a VM that --force was replacing is "
            "restored, and a live clone's backup job on the source is ended. The source VM is "
            "never touched. Journals live in the user state directory "
            "($KVM_CLONE_STATE_DIR/jobs). To finish them from what they copied instead, "
            "use `kvm-clone resume`."
        ),
        epilog="example:\n  kvm-clone recover --output json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("--output", "-o", choices=("text", "json"), default="text")
    r.set_defaults(run=run_recover)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "new_name": args.new_name,
        "pool": args.pool,
        "force": args.force or None,
        "idempotent": args.idempotent or None,
        "start": args.start,
        "preserve_mac": args.preserve_mac,
        "compress": args.compress,
        "transfer": args.transfer,
        "parallel": args.parallel,
        "no_progress_timeout": args.timeout,
        "verify": False if args.no_verify else (True if args.verify else None),
        "checkpoint": False if args.no_checkpoint else None,
    }
    if args.bandwidth_limit:
        overrides["bandwidth_limit"] = parse_bandwidth(args.bandwidth_limit)
    if args.parallel is not None and not 1 <= args.parallel <= 16:
        raise ValidationError("--parallel takes 1 to 16")
    if args.timeout is not None and args.timeout <= 0:
        raise ValidationError("--timeout takes a number of seconds > 0")
    return overrides


async def _run(
    args: argparse.Namespace, options: CloneOptions, on_event: Any
) -> CloneResult | ClonePlan:
    async with KVMCloneClient(load_config()) as client:
        if args.dry_run:
            return await client.plan_clone(args.source, args.dest, args.vm, options)
        return await client.clone_vm(
            args.source, args.dest, args.vm, options, on_event=on_event, check=True
        )


def run(args: argparse.Namespace) -> int:
    """Run ``clone``; see EPILOG for exit codes."""
    console = Console(stderr=args.output == "json")
    try:
        for host in (args.source, args.dest):
            parse_host_spec(host)
        validate_vm_name(args.vm)
        if args.new_name is not None:
            validate_vm_name(args.new_name)
        options = CloneOptions.from_config(load_config(), **_options(args))
    except (ValidationError, ConfigError, ValueError) as exc:
        print(f"kvm-clone clone: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        job_log = job_logger(
            "clone", host=args.dest, source=args.source, dest=args.dest, vm=args.vm
        )
        outcome = run_with_progress(
            lambda on_event: _run(args, options, on_event), args.output, console, job_log
        )
    except KeyboardInterrupt:
        kept = "staged files kept: run it again to resume" if args.idempotent else "rolled back"
        print(f"kvm-clone clone: interrupted: {kept}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CloneRefused as exc:
        return _report_plan(args, exc.plan, console, refused=True)
    except (KVMCloneError, ValidationError) as exc:
        report_failure("clone", exc, args.output)
        return EXIT_FAILED
    if isinstance(outcome, ClonePlan):
        return _report_plan(args, outcome, console, refused=not outcome.ok)
    if args.output == "json":
        print(dump(document(ok=True, result=clone_result_data(outcome)), "json"))
    else:
        note = (
            " (already done)"
            if outcome.already_done
            else (
                f": {outcome.bytes_copied / 2**20:.1f} MiB in {outcome.seconds:.1f} s via "
                f"{outcome.route}"
            )
        )
        if outcome.resumed_from:
            note += (
                f" (resumed job {outcome.resumed_from}: "
                f"{outcome.bytes_reused / 2**20:.1f} MiB were already there)"
            )
        console.print(
            f"cloned {outcome.vm} -> {outcome.dest_host}:{outcome.new_name}{note}", highlight=False
        )
    return EXIT_OK


def _report_plan(args: argparse.Namespace, plan: ClonePlan, console: Console, refused: bool) -> int:
    if args.output == "json":
        print(dump(document(ok=not refused, plan=clone_plan_data(plan)), "json"))
    else:
        console.print(plan.describe(), highlight=False, markup=False, soft_wrap=True)
    if refused:
        print("kvm-clone clone: refused: " + "; ".join(map(str, plan.conflicts)), file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK


def run_recover(args: argparse.Namespace) -> int:
    """Roll back every interrupted job."""

    async def go() -> list[str]:
        async with KVMCloneClient(load_config()) as client:
            return await client.recover(
                on_event=lambda e: print(f"{e.step}: {e.message}", file=sys.stderr)
            )

    try:
        jobs = asyncio.run(go())
    except (KVMCloneError, ConfigError) as exc:
        print(f"kvm-clone recover: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.output == "json":
        print(dump(document(rolled_back=jobs), "json"))
    else:
        print(
            f"rolled back {len(jobs)} interrupted job(s)" + (f": {', '.join(jobs)}" if jobs else "")
        )
    return EXIT_OK
