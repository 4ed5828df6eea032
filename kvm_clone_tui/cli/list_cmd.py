"""``kvm-clone list HOST...``: the VMs of one or more hosts, as tables or as JSON/YAML."""

from __future__ import annotations

import argparse
import asyncio
import sys

from kvm_clone_tui.api.client import KVMCloneClient
from kvm_clone_tui.api.config import Config, ConfigError, load_config
from kvm_clone_tui.api.models import VM, HostListing, VMState
from kvm_clone_tui.api.units import format_bytes
from kvm_clone_tui.api.validation import ValidationError, parse_host_spec
from kvm_clone_tui.cli.documents import listing_document
from kvm_clone_tui.cli.exit_codes import EXIT_HOST_FAILED, EXIT_OK, EXIT_USAGE
from kvm_clone_tui.cli.logs import log
from kvm_clone_tui.cli.output import dump, table

DESCRIPTION = """\
List the VMs of one or more hosts, read in parallel over one SSH connection per host.

A HOST is an ssh alias from your ~/.ssh/config, a name from kvm-clone's config (`kvm-clone
config show`), or [user@]host[:port]. Host keys are checked against known_hosts
(ssh.host_key_policy: strict by default). With no HOST, the config's default_hosts are listed.
"""

EPILOG = """\
examples:
  kvm-clone list alpha beta
  kvm-clone list root@10.0.0.5:2222 --status running
  kvm-clone list alpha --output json | jq '.hosts[0].vms[].name'

exit codes:
  0  every host was listed
  1  at least one host failed (the others are still listed; each failure says why)
  2  bad usage: a hostile or malformed host name, a bad option, a bad config file
"""

STATUS_CHOICES = ("all", *[s.value for s in VMState])


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``list``."""
    parser = subparsers.add_parser(
        "list",
        help="list the VMs of one or more hosts",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("hosts", nargs="*", metavar="HOST", help="hosts to list")
    parser.add_argument(
        "--status",
        choices=STATUS_CHOICES,
        default="all",
        help="only VMs in this state (default: all)",
    )
    parser.add_argument(
        "--output",
        "-o",
        "--format",
        dest="output",
        choices=("table", "json", "yaml"),
        default="table",
        help="table for people, json/yaml for scripts (default: table); --format is the "
        "same option under the original kvm-clone's name",
    )
    parser.set_defaults(run=run)


def _vm_row(vm: VM) -> list[str]:
    disks = [d for d in vm.disks if d.device.value == "disk"]
    return [
        vm.name,
        vm.state.value,
        str(vm.vcpus),
        format_bytes(vm.memory_kib * 1024),
        str(len(disks)),
        format_bytes(vm.allocation),
        format_bytes(vm.virtual_size),
        "yes" if vm.autostart else "no",
    ]


def render_table(listings: list[HostListing]) -> str:
    """One table per host; failed hosts as a line with the reason."""
    blocks = []
    for listing in listings:
        inv = listing.inventory
        if inv is None:
            blocks.append(f"{listing.host}: FAILED: {listing.error}")
            continue
        title = (
            f"{listing.host} ({inv.hostname}, libvirt {inv.libvirt_version}): "
            f"{len(inv.vms)} VM{'s' if len(inv.vms) != 1 else ''}"
        )
        lines = [title]
        if inv.vms:
            lines.append(
                table(
                    [
                        "NAME",
                        "STATE",
                        "VCPUS",
                        "MEMORY",
                        "DISKS",
                        "ALLOCATED",
                        "VIRTUAL",
                        "AUTOSTART",
                    ],
                    [_vm_row(vm) for vm in inv.vms],
                    right={2, 3, 4, 5, 6},
                    indent="  ",
                )
            )
        for pool in inv.pools:
            lines.append(
                f"  pool {pool.name}: {format_bytes(pool.available)} free of "
                f"{format_bytes(pool.capacity)}{'' if pool.active else ' (inactive)'}"
            )
        lines += [f"  warning: {e}" for e in inv.errors]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


async def _list(config: Config, hosts: list[str], status: VMState | None) -> list[HostListing]:
    async with KVMCloneClient(config) as client:
        return await client.list_vms(hosts, status=status)


def run(args: argparse.Namespace) -> int:
    """Run ``list``; see EPILOG for the exit codes."""
    try:
        config = load_config()
        hosts = list(args.hosts) or list(config.default_hosts)
        if not hosts:
            print(
                "kvm-clone list: error: name at least one HOST, or set default_hosts "
                "(kvm-clone config set default_hosts alpha,beta)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        for host in hosts:
            parse_host_spec(host)
        status = None if args.status == "all" else VMState(args.status)
        listings = asyncio.run(_list(config, hosts, status))
    except (ValidationError, ConfigError) as exc:
        print(f"kvm-clone list: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.output == "table":
        print(render_table(listings))
    else:
        print(dump(listing_document(listings), args.output))
    for listing in listings:
        if listing.error is not None:
            print(f"kvm-clone list: {listing.error}", file=sys.stderr)
            log.error("%s", listing.error, extra={"command": "list", "host": listing.host})
        elif listing.inventory is not None:
            count = len(listing.inventory.vms)
            log.info("%d VMs", count, extra={"command": "list", "host": listing.host})
    return EXIT_OK if all(lst.inventory is not None for lst in listings) else EXIT_HOST_FAILED
