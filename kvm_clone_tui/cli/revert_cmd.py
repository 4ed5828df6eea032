"""``kvm-clone revert DST VM``: undo the last sync made with ``--checkpoint``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from kvm_clone_tui.api.client import KVMCloneClient
from kvm_clone_tui.api.config import load_config
from kvm_clone_tui.api.errors import KVMCloneError, RevertRefused
from kvm_clone_tui.api.results import RevertResult
from kvm_clone_tui.api.units import format_bytes
from kvm_clone_tui.api.validation import ValidationError, parse_host_spec, validate_vm_name
from kvm_clone_tui.cli.documents import document, failure_document, revert_result_data
from kvm_clone_tui.cli.exit_codes import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
)
from kvm_clone_tui.cli.job_output import report_failure
from kvm_clone_tui.cli.output import dump

DESCRIPTION = """\
Put the clone VM on DST back as it was before its last sync, when that sync was made with
`kvm-clone sync ... --checkpoint`: the old contents of every block the sync overwrote were kept
next to the clone's disks, and its old definition with them. Refused when the clone changed
after the sync (it was started, or its files were written): putting old blocks into a changed
disk would mix two states. The clone must be shut down. Only the last sync can be reverted; the
next sync compares block hashes (the source's checkpoint moved on with the reverted sync).
"""

EPILOG = """\
examples:
  kvm-clone sync alpha beta web01 --checkpoint
  kvm-clone revert beta web01
  kvm-clone revert beta web01 --output json

exit codes:
  0  reverted   1  failed   2  bad usage   4  refused (nothing to revert, clone changed or
  running): nothing changed   130  interrupted
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``revert``."""
    p = subparsers.add_parser(
        "revert",
        help="undo the last sync of a clone (made with sync --checkpoint)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dest", metavar="DST", help="host of the clone")
    p.add_argument("vm", metavar="VM", help="the clone's name on DST")
    p.add_argument("--output", "-o", choices=("text", "json"), default="text")
    p.set_defaults(run=run)


async def _revert(args: argparse.Namespace) -> RevertResult:
    async with KVMCloneClient(load_config()) as client:
        return await client.revert_sync(args.dest, args.vm)


def run(args: argparse.Namespace) -> int:
    """Run ``revert``; see EPILOG for exit codes."""
    try:
        parse_host_spec(args.dest)
        validate_vm_name(args.vm)
    except ValidationError as exc:
        print(f"kvm-clone revert: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = asyncio.run(_revert(args))
    except KeyboardInterrupt:
        print("kvm-clone revert: interrupted: run it again", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RevertRefused as exc:
        if args.output == "json":
            print(dump(failure_document(exc, "refused"), "json"))
        print(f"kvm-clone revert: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (KVMCloneError, ValidationError) as exc:
        report_failure("revert", exc, args.output)
        return EXIT_FAILED
    if args.output == "json":
        print(dump(document(ok=True, result=revert_result_data(result)), "json"))
    else:
        print(
            f"reverted {result.target} on {result.dest_host} to before sync {result.sync_job}: "
            f"{format_bytes(result.restored_bytes)} restored in {result.seconds:.1f} s"
        )
    return EXIT_OK
