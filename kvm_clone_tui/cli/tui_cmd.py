"""``kvm-clone tui [HOST...]`` (and plain ``kvm-clone``): open the terminal UI.

Textual and the UI are imported only when the command runs, so other commands stay quick.
"""

from __future__ import annotations

import argparse
import sys

from kvm_clone_tui.api.config import ConfigError
from kvm_clone_tui.api.validation import ValidationError

EXIT_OK, EXIT_USAGE = 0, 2

SUMMARY = "open the terminal UI (hosts side by side, their VMs live, clone by key or mouse)"

DESCRIPTION = """\
Open the terminal UI: one pane per host, side by side, each listing its VMs and kept current
by the host's events.

Hosts: the HOST arguments, else the config's default_hosts, else (without --config) the local
lab's hosts when a lab is up (`kvm-clone lab up`), else none: press `a` to add one. A HOST is an
ssh alias, a name from kvm-clone's config, or [user@]host[:port].

Keys: arrows or j/k move, h/l or tab switch panes, space marks VMs, / filters, enter shows a VM's
details, c clones the marked VMs (or the current one) to a host you pick, J shows the jobs,
x cancels one, a adds a host, d removes one, r refreshes, ? lists every key, ctrl+p the
commands. With the mouse, drag a VM onto another host's pane to clone it there.
"""

EPILOG = """\
examples:
  kvm-clone                          the default hosts (or the lab's)
  kvm-clone tui alpha root@10.0.0.5
  kvm-clone tui --config lab.yaml

exit codes:
  0 closed normally   2 bad usage: a hostile host name, a bad config file
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``tui``."""
    parser = subparsers.add_parser(
        "tui",
        help=SUMMARY,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("hosts", nargs="*", metavar="HOST", help="hosts to open")
    parser.add_argument(
        "--config", metavar="FILE", help="configuration file (default: $KVM_CLONE_CONFIG or ...)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the UI until it is closed."""
    from kvm_clone_tui.tui.startup import resolve_startup

    try:
        startup = resolve_startup(list(args.hosts), getattr(args, "config", None))
    except (ConfigError, ValidationError) as exc:
        print(f"kvm-clone tui: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    from kvm_clone_tui.tui.app import KVMCloneApp

    sub_title = f"lab hosts ({startup.config_file})" if startup.origin == "lab" else None
    KVMCloneApp(startup.hosts, config=startup.config, sub_title=sub_title).run()
    return EXIT_OK
