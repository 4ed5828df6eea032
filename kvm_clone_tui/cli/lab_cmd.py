"""``kvm-clone lab``: a local multi-host KVM lab to try kvm-clone on and to test it against."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from kvm_clone_tui.lab.layout import (
    DEFAULT_BASE_ADDRESS,
    DEFAULT_SSH_PORT,
    LAB_CACHE_ENV,
    LAB_DIR_ENV,
    LabError,
    LabLayout,
    default_cache_dir,
    default_state_dir,
    plan_hosts,
)
from kvm_clone_tui.lab.manager import Lab

DESCRIPTION = """\
A playground of simulated KVM hosts on this machine: each host has its own mount namespace
(private /run, /var/lib/libvirt, /etc/libvirt, /var/log/libvirt, /var/cache/libvirt, /root/.ssh),
its own libvirtd and virtlogd, and its own sshd on its own loopback address (alpha on 127.0.0.2,
beta on 127.0.0.3, ...). The first host gets sample VMs, one of which boots a minimal Linux that
keeps writing to its disk. Needs root and the packages that `make deps` installs.
"""

EPILOG = f"""\
examples:
  kvm-clone lab up                     three hosts: alpha, beta, gamma
  kvm-clone lab status
  kvm-clone lab ssh alpha virsh list --all
  ssh -F "$(kvm-clone lab path)/ssh_config" beta      plain OpenSSH, strict host keys
  kvm-clone lab down                   stop every lab process; files are kept
  kvm-clone lab down --purge           ... and delete the lab's files (VM disks included)

environment:
  {LAB_DIR_ENV}     the lab's state directory (default: {default_state_dir()})
  {LAB_CACHE_ENV}   where guest kernels are cached (default: {default_cache_dir()})
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``lab`` and its subcommands."""
    parser = subparsers.add_parser(
        "lab",
        help="run a local multi-host KVM lab (libvirtd + QEMU + sshd hosts) on this machine",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"the lab's state directory (default: ${LAB_DIR_ENV} or {default_state_dir()})",
    )
    sub = parser.add_subparsers(dest="lab_command", metavar="COMMAND", required=True)

    up = sub.add_parser(
        "up",
        help="start the lab hosts (harmless when they already run)",
        description="Start the lab hosts and create the sample VMs on the first.",
    )
    up.add_argument(
        "--hosts",
        type=int,
        default=3,
        metavar="N",
        help="how many hosts (alpha, beta, gamma, ...; default 3)",
    )
    up.add_argument(
        "--base-address",
        default=DEFAULT_BASE_ADDRESS,
        metavar="IP",
        help=f"loopback address of the first host (default {DEFAULT_BASE_ADDRESS})",
    )
    up.add_argument(
        "--port",
        type=int,
        default=DEFAULT_SSH_PORT,
        help=f"sshd port on every host address (default {DEFAULT_SSH_PORT})",
    )
    up.add_argument(
        "--no-sample-vms",
        action="store_true",
        help="do not create the sample VMs (no guest kernel is fetched)",
    )
    up.set_defaults(handler=_up)

    down = sub.add_parser(
        "down",
        help="stop every process the lab started",
        description="Stop every process in the lab hosts' namespaces.",
    )
    down.add_argument(
        "--purge", action="store_true", help="also delete the lab's files, VM disks included"
    )
    down.set_defaults(handler=_down)

    status = sub.add_parser("status", help="daemons, SSH reachability and VMs of each host")
    status.add_argument("--output", choices=("table", "json"), default="table")
    status.set_defaults(handler=_status)

    ssh = sub.add_parser(
        "ssh",
        help="open a shell on a lab host, or run CMD there",
        description="Run OpenSSH with the lab's ssh_config (strict host keys).",
    )
    ssh.add_argument("host", metavar="HOST")
    ssh.add_argument(
        "cmd",
        nargs=argparse.REMAINDER,
        metavar="CMD",
        help="command to run on the host (as with ssh)",
    )
    ssh.set_defaults(handler=_ssh)

    path = sub.add_parser("path", help="print the lab's state directory")
    path.set_defaults(handler=lambda lab, _args: print(lab.layout.root) or 0)

    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch a ``lab`` subcommand; errors become a message and exit code 1."""
    try:
        layout = LabLayout(args.dir.absolute() if args.dir else default_state_dir())
        lab = Lab(layout, default_cache_dir(), log=lambda m: print(m, file=sys.stderr))
        code: int = args.handler(lab, args)
        return code
    except LabError as exc:
        print(f"kvm-clone lab: error: {exc}", file=sys.stderr)
        return 1


def _up(lab: Lab, args: argparse.Namespace) -> int:
    hosts = plan_hosts(args.hosts, args.base_address, args.port)
    lab.up(hosts, sample_vms=not args.no_sample_vms)
    print(f"lab is up: {', '.join(h.name for h in hosts)}")
    print(f"try: kvm-clone lab ssh {hosts[0].name} virsh list --all")
    return 0


def _down(lab: Lab, args: argparse.Namespace) -> int:
    lab.down(purge=args.purge)
    return 0


def _status(lab: Lab, args: argparse.Namespace) -> int:
    statuses = lab.status()
    if args.output == "json":
        print(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "address": s.address,
                        "port": s.port,
                        "up": s.up,
                        "daemons": s.daemons,
                        "ssh_reachable": s.ssh_reachable,
                        "vms": s.vms,
                    }
                    for s in statuses
                ],
                indent=2,
            )
        )
    elif not statuses:
        print(f"no lab in {lab.layout.root}: run `kvm-clone lab up`")
    else:
        for s in statuses:
            state = "up" if s.up else "DOWN"
            down = [d for d, pid in s.daemons.items() if pid is None]
            detail = f" (not running: {', '.join(down)})" if down else ""
            if not s.ssh_reachable:
                detail += " (sshd not answering)"
            print(f"{s.name:<8} {s.address}:{s.port:<5} {state}{detail}")
            for vm, vm_state in sorted(s.vms.items()):
                print(f"    {vm:<20} {vm_state}")
    return 0 if statuses and all(s.up for s in statuses) else 3


def _ssh(lab: Lab, args: argparse.Namespace) -> int:
    lab.runtime(args.host)  # refuses unknown names before ssh sees them
    argv = ["ssh", "-F", str(lab.layout.ssh_config), args.host, *args.cmd]
    sys.stdout.flush()
    os.execvp("ssh", argv)
