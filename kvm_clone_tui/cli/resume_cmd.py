"""``kvm-clone resume [JOB]``: finish interrupted clones from what they already copied."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from rich.console import Console

from kvm_clone_tui.api.client import KVMCloneClient, unfinished_jobs
from kvm_clone_tui.api.config import ConfigError, load_config
from kvm_clone_tui.api.errors import CloneRefused, KVMCloneError, ResumeError
from kvm_clone_tui.api.events import EventCallback
from kvm_clone_tui.api.results import CloneResult
from kvm_clone_tui.cli.documents import (
    clone_result_data,
    document,
    error_data,
    unfinished_job_data,
)
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
Finish clones that were interrupted (kill -9, a crash, a dropped connection, Ctrl-C of a clone
run with --idempotent, or "keep for later" in the TUI) from the files they already staged in the
destination pool, instead of copying everything again.

Each job is planned again with the options it was started with. Both hosts hash every staged
file in 64 KiB blocks at the same time; only the blocks that are missing or differ from the
source are sent and written in place, so the whole file ends up verified block by block (a
block damaged or lost in the crash is simply sent again). Then the clone commits as usual.

A job that cannot resume starts afresh and says why: a live clone (the point in time it was
copying is gone), a job that had begun its commit, or a source whose disks changed size.
Jobs that another kvm-clone process is still running are never touched. `kvm-clone recover`
rolls interrupted jobs back instead; `kvm-clone clone ... --idempotent` resumes the same way.
"""

EPILOG = """\
examples:
  kvm-clone resume --list                      unfinished jobs, and whether each can resume
  kvm-clone resume                             resume every unfinished clone
  kvm-clone resume 20260101-120000-1a2b3c4d    resume one job
  kvm-clone resume --output json | jq '.jobs[].result.bytes_copied'

exit codes:
  0    every job finished (or there was nothing to resume)
  1    a job failed (its staged files are kept: resume again, or `kvm-clone recover`)
  2    bad usage: unknown job, or one still running in another process
  4    refused by the plan (name taken meanwhile, no space, ...): nothing was changed
  130  interrupted (Ctrl-C): staged files kept for the next resume
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``resume``."""
    p = subparsers.add_parser(
        "resume",
        help="finish interrupted clones from what they already copied",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("job", metavar="JOB", nargs="?", help="job id (default: every unfinished job)")
    p.add_argument("--list", action="store_true", help="show the unfinished jobs; resume nothing")
    p.add_argument("--output", "-o", choices=("text", "json"), default="text")
    p.set_defaults(run=run)


def _list(output: str) -> int:
    jobs = [unfinished_job_data(j) for j in unfinished_jobs(include_running=True)]
    if output == "json":
        print(dump(document(jobs=jobs), "json"))
        return EXIT_OK
    if not jobs:
        print("no unfinished jobs")
    for job in jobs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["created"]))
        how = "resumable" if job["resumable"] else f"starts afresh: {job['why_not']}"
        if job["running"]:
            how = f"not touched: {job['why_not']}"
        print(
            f"{job['job_id']}  {job['state']:<9} {job['vm']} ({job['source_host']}) -> "
            f"{job['new_name']} ({job['dest_host']})  {when}  {how}"
        )
    return EXIT_OK


async def _resume(
    job_ids: list[str], on_event: EventCallback | None
) -> list[tuple[str, CloneResult | Exception]]:
    outcomes: list[tuple[str, CloneResult | Exception]] = []
    async with KVMCloneClient(load_config()) as client:
        for job_id in job_ids:
            try:
                outcomes.append((job_id, await client.resume_job(job_id, on_event=on_event)))
            except ResumeError:
                if len(job_ids) == 1:
                    raise
                continue  # taken by another process meanwhile, or finished by an earlier one
            except (KVMCloneError, OSError) as exc:
                if len(job_ids) == 1:
                    raise
                outcomes.append((job_id, exc))
    return outcomes


def run(args: argparse.Namespace) -> int:
    """Run ``resume``; see EPILOG for exit codes."""
    try:
        if args.list:
            return _list(args.output)
        job_ids = [args.job] if args.job else [j.job_id for j in unfinished_jobs()]
    except ConfigError as exc:
        print(f"kvm-clone resume: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    console = Console(stderr=args.output == "json")
    try:
        job_log = job_logger("resume")
        outcomes = run_with_progress(
            lambda on_event: _resume(job_ids, on_event), args.output, console, job_log
        )
    except KeyboardInterrupt:
        print(
            "kvm-clone resume: interrupted: staged files kept for the next resume", file=sys.stderr
        )
        return EXIT_INTERRUPTED
    except ResumeError as exc:
        report_failure("resume", exc, args.output)
        return EXIT_USAGE
    except CloneRefused as exc:
        report_failure("resume", exc, args.output)
        return EXIT_REFUSED
    except (KVMCloneError, ConfigError, OSError) as exc:
        report_failure("resume", exc, args.output)
        return EXIT_FAILED
    failed = [(j, o) for j, o in outcomes if isinstance(o, Exception)]
    if args.output == "json":
        if args.job:
            print(dump(document(ok=True, result=_outcome_data(outcomes[0][1])), "json"))
        else:
            jobs = [
                {"job_id": j, "ok": False, "error": error_data(o)}
                if isinstance(o, Exception)
                else {"job_id": j, "ok": True, "result": clone_result_data(o)}
                for j, o in outcomes
            ]
            print(dump(document(ok=not failed, jobs=jobs), "json"))
    else:
        if not outcomes:
            console.print("nothing to resume: no unfinished jobs")
        for job_id, outcome in outcomes:
            if isinstance(outcome, Exception):
                print(f"kvm-clone resume: job {job_id} failed: {outcome}", file=sys.stderr)
                continue
            console.print(_summary(job_id, outcome), highlight=False)
    if any(isinstance(o, CloneRefused) for _, o in failed):
        return EXIT_REFUSED
    return EXIT_FAILED if failed else EXIT_OK


def _summary(job_id: str, result: CloneResult) -> str:
    mib = 2**20
    how = (
        f"resumed job {result.resumed_from}: {result.bytes_reused / mib:.1f} MiB kept, "
        if result.resumed_from
        else f"job {job_id} started afresh: "
    )
    return (
        f"cloned {result.vm} -> {result.dest_host}:{result.new_name} ({how}"
        f"{result.bytes_copied / mib:.1f} MiB sent in {result.seconds:.1f} s)"
    )


def _outcome_data(outcome: CloneResult | Exception) -> dict[str, Any]:
    """The one job's outcome (``resume JOB`` raises its failure instead: it is a result)."""
    assert isinstance(outcome, CloneResult)
    return clone_result_data(outcome)
