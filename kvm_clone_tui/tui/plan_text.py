"""Clone and sync plans for people, as the dialogs show them: route, space, files, mode,
checkpoints, problems."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from kvm_clone_tui.api.plans import ClonePlan
from kvm_clone_tui.api.units import format_bytes

if TYPE_CHECKING:
    from kvm_clone_tui.api.plans import SyncPlan

LABEL_WIDTH = 10


def _row(text: Text, label: str, value: str | Text, style: str = "") -> None:
    text.append(f"\n{label:>{LABEL_WIDTH}}  ", style="bold")
    text.append(value if isinstance(value, Text) else Text(value, style=style))


def plan_summary(plan: ClonePlan) -> Text:
    """Where it goes, which way the data takes and why, and whether it fits."""
    text = Text()
    text.append(f"{plan.vm.name}", style="bold")
    text.append(f" ({plan.vm.state.value}) → ")
    text.append(f"{plan.new_name}", style="bold")
    text.append(f" on {plan.dest_host}")
    if plan.live:
        _row(text, "copy", "live: the VM keeps running, its disks are read at one point in time")
    else:
        _row(text, "copy", f"offline: the VM is {plan.vm.state.value}")
    _row(text, "route", f"{plan.route}: {plan.route_reason}")
    _row(text, "compress", f"{'on' if plan.compress else 'off'}: {plan.compress_reason}")
    fits = plan.required_space <= plan.pool_available
    space = Text(
        f"needs {format_bytes(plan.required_space)} in pool {plan.pool} ({plan.pool_path}), "
        f"{format_bytes(plan.pool_available)} free "
    )
    space.append("✓ fits" if fits else "✗ does not fit", style="green" if fits else "bold red")
    _row(text, "space", space)
    if plan.replace_existing:
        _row(text, "replaces", f"the existing {plan.new_name} once the copy is verified", "yellow")
    return text


def files_table(plan: ClonePlan) -> RenderableType:
    """Every file that moves: its data size, its source and where it lands."""
    if not plan.files:
        return Text(f"{'':>{LABEL_WIDTH}}  no files to copy", style="dim")
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False, expand=True)
    table.add_column("file", no_wrap=True)
    table.add_column("format", no_wrap=True)
    table.add_column("to copy", justify="right", no_wrap=True)
    table.add_column("virtual", justify="right", no_wrap=True)
    table.add_column("from → to", ratio=1, overflow="fold")
    for f in plan.files:
        table.add_row(
            Text(f.label),
            Text(f.format),
            Text(format_bytes(f.allocated)),
            Text(format_bytes(f.virtual_size) if f.virtual_size else "-"),
            Text(f"{f.source_path} → {f.final_path}"),
        )
    return table


def problems(plan: ClonePlan | SyncPlan) -> Text:
    """Warnings (yellow) and conflicts (red: they refuse the clone)."""
    text = Text()
    for warning in plan.warnings:
        text.append(f"⚠ {warning.message}\n", style="yellow")
    for conflict in plan.conflicts:
        text.append(f"✗ {conflict.message}\n", style="bold red")
    text.rstrip()
    return text


def plan_renderable(plan: ClonePlan) -> RenderableType:
    """The whole plan of one VM."""
    parts: list[RenderableType] = [plan_summary(plan), files_table(plan)]
    if plan.warnings or plan.conflicts:
        parts.append(problems(plan))
    return Group(*parts)


def plan_failure(vm: str, error: str) -> Text:
    """A plan that could not be made at all (host unreachable, VM gone...)."""
    text = Text()
    text.append(vm, style="bold")
    text.append(f": could not plan: {error}", style="bold red")
    return text


def sync_plan_renderable(plan: SyncPlan) -> RenderableType:
    """A sync plan: the mode and why, the checkpoints, the undo, the file pairs, problems."""
    text = Text()
    text.append(plan.vm.name, style="bold")
    text.append(f" ({plan.source_host}, {plan.vm.state.value}) ⇉ ")
    text.append(plan.target, style="bold")
    text.append(f" on {plan.dest_host}")
    _row(text, "mode", f"{plan.mode}: {plan.mode_reason}")
    if plan.source_running:
        _row(text, "source", "running: its disks are read at one point in time (a backup job)")
    if plan.new_checkpoint:
        _row(
            text,
            "checkpoint",
            f"{plan.base_checkpoint or '(none)'} → {plan.new_checkpoint} "
            "(on the source, for the next sync)",
        )
    else:
        _row(text, "checkpoint", "none: the next sync compares block hashes", "dim")
    if plan.options.checkpoint:
        _row(text, "undo", "kept: u in the session reverts the clone to before this sync", "green")
    else:
        _row(text, "undo", "off: this sync cannot be reverted", "dim")
    parts: list[RenderableType] = [text]
    if plan.pairs:
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False, expand=True)
        table.add_column("file", no_wrap=True)
        table.add_column("source → clone", ratio=1, overflow="fold")
        for pair in plan.pairs:
            table.add_row(Text(pair.label), Text(f"{pair.source_path} → {pair.dest_path}"))
        parts.append(table)
    if plan.warnings or plan.conflicts:
        parts.append(problems(plan))
    return Group(*parts)
