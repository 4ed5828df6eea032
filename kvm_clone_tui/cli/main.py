"""The ``kvm-clone`` entry point: one subcommand per task."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kvm_clone_tui import __version__
from kvm_clone_tui.cli import (
    clone_cmd,
    config_cmd,
    lab_cmd,
    list_cmd,
    logs,
    resume_cmd,
    revert_cmd,
    sync_cmd,
    tui_cmd,
)

DESCRIPTION = """\
Clone and synchronise KVM virtual machines between libvirt hosts over SSH.

kvm-clone copies only the data a VM's disks really hold, straight from host to host, verifies
what it wrote, and never leaves a half-defined VM behind. Run it without a command to open the
terminal UI.
"""

EPILOG = """\
examples:
  kvm-clone lab up                      start a local three-host lab to try it on
  kvm-clone list alpha beta             the VMs of two hosts
  kvm-clone list alpha --output json    ... for scripts
  kvm-clone --log-format json clone alpha beta web01 --log-file clone.log
                                        one JSON object per event, into a file

exit codes:
  0 success   1 error (e.g. a host failed)   2 bad usage   4 refused by the plan
  3 (lab status) some lab hosts are down
"""


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="kvm-clone",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kvm-clone {__version__}")
    logs.add_arguments(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    tui_cmd.add_parser(sub)
    list_cmd.add_parser(sub)
    clone_cmd.add_parser(sub)
    resume_cmd.add_parser(sub)
    sync_cmd.add_parser(sub)
    revert_cmd.add_parser(sub)
    config_cmd.add_parser(sub)
    lab_cmd.add_parser(sub)
    for command in {id(p): p for p in sub.choices.values()}.values():  # aliases: once each
        logs.add_arguments(command, top=False)  # the log options work after the command too
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kvm-clone`` and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # plain `kvm-clone` opens the UI
        args = parser.parse_args([*(sys.argv[1:] if argv is None else argv), "tui"])
    logs.configure(args.log_format, args.log_file)
    code: int = args.run(args)
    return code
