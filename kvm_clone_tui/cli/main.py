"""The ``kvm-clone`` entry point: one subcommand per task."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kvm_clone_tui import __version__
from kvm_clone_tui.cli import clone_cmd, config_cmd, lab_cmd, list_cmd
from kvm_clone_tui.tui import command as tui_command

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

exit codes:
  0 success   1 error (e.g. a host failed)   2 bad usage, or command not available yet
  3 (lab status) some lab hosts are down
"""

# Commands whose implementation lands with later issues. They exist so that `--help` shows the
# whole shape of the tool, but they refuse to run instead of pretending to work.
PENDING: dict[str, tuple[str, str]] = {
    "sync": ("bring an earlier clone up to date", "incremental sync"),
}


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="kvm-clone",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kvm-clone {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (summary, feature) in PENDING.items():
        pending = sub.add_parser(
            name,
            help=f"{summary} [not available yet]",
            description=f"{summary[0].upper()}{summary[1:]}. Not available yet in this version: "
            f"it arrives with {feature}.",
        )
        pending.set_defaults(pending=feature)
    tui_command.add_parser(sub)
    list_cmd.add_parser(sub)
    clone_cmd.add_parser(sub)
    config_cmd.add_parser(sub)
    lab_cmd.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kvm-clone`` and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # plain `kvm-clone` opens the UI
        args = parser.parse_args(["tui"])
    command = args.command
    run = getattr(args, "run", None)
    if run is not None:
        code: int = run(args)
        return code
    feature = getattr(args, "pending", PENDING[command][1])
    print(
        f"kvm-clone {command}: not available yet in version {__version__} (it arrives with "
        f"{feature}). Available now: `kvm-clone list`, `clone`, `recover`, `config` and `lab`.",
        file=sys.stderr,
    )
    return 2
