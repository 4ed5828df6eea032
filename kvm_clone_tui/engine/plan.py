"""The clone plan: everything decided and checked before a single byte is copied.

It is also what ``--dry-run`` prints and what the TUI shows before it starts: the disks with
their sizes and paths, the route the data takes and why, the space check, conflicts (which
refuse the clone) and warnings. Planning is two steps: :func:`gather_clone_facts` asks the
hosts (``plan_facts.py``), then the pure :func:`decide` applies the rules (``plan_rules.py``).
"""

from __future__ import annotations

from kvm_clone_tui.api.options import CloneOptions
from kvm_clone_tui.api.plans import ClonePlan, Conflict, DirectEndpoint, FilePlan, PlanWarning
from kvm_clone_tui.engine.host_port import Hosts
from kvm_clone_tui.engine.plan_facts import CloneFacts, gather_clone_facts
from kvm_clone_tui.engine.plan_rules import (
    SPACE_MARGIN_FRACTION,
    SPACE_MARGIN_MIN,
    decide,
    destination_xml,
)

__all__ = [
    "SPACE_MARGIN_FRACTION",
    "SPACE_MARGIN_MIN",
    "CloneFacts",
    "ClonePlan",
    "Conflict",
    "DirectEndpoint",
    "FilePlan",
    "PlanWarning",
    "build_plan",
    "decide",
    "destination_xml",
    "gather_clone_facts",
]


async def build_plan(
    hosts: Hosts, source: str, dest: str, vm_name: str, options: CloneOptions
) -> ClonePlan:
    """Check everything and decide every path; conflicts are collected, not raised."""
    return decide(await gather_clone_facts(hosts, source, dest, vm_name, options), options)
