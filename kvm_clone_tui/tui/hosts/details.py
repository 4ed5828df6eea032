"""The VM details modal: summary, disks with backing chains, NICs, firmware, warnings, XML."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ClassVar

from rich.console import RenderableType
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from kvm_clone_tui.api.models import VM
from kvm_clone_tui.api.units import format_bytes

XMLLoader = Callable[[], Awaitable[str]]


def summary(vm: VM) -> Text:
    """State, size and identity in a few lines."""
    text = Text()
    rows = [
        ("state", vm.state.value),
        ("vCPUs", str(vm.vcpus)),
        ("memory", format_bytes(vm.memory_kib * 1024)),
        ("disks", f"{format_bytes(vm.allocation)} allocated of {format_bytes(vm.virtual_size)}"),
        ("autostart", "yes" if vm.autostart else "no"),
        ("persistent", "yes" if vm.persistent else "no (transient)"),
        ("domain type", vm.domain_type),
        ("UUID", vm.uuid),
    ]
    for label, value in rows:
        text.append(f"{label:>12}  ", style="bold")
        text.append(f"{value}\n")
    text.rstrip()
    return text


def disks_table(vm: VM) -> RenderableType:
    """Every disk, CD-ROMs included, with its backing chain below its path."""
    if not vm.disks:
        return Text("no disks", style="dim")
    table = Table(expand=True, box=None, header_style="bold", pad_edge=False)
    for column, right in (
        ("target", False),
        ("device", False),
        ("format", False),
        ("path / backing chain", False),
        ("virtual", True),
        ("allocated", True),
    ):
        table.add_column(column, justify="right" if right else "left", overflow="fold")
    for disk in vm.disks:
        path = Text(disk.path or "(empty)", style="" if disk.path else "dim")
        if disk.readonly:
            path.append(" (read-only)", style="dim")
        for layer in disk.backing_chain:
            path.append(f"\n└ {layer.path}", style="italic")
            path.append(f" ({layer.format or 'format unknown'})", style="dim")
        table.add_row(
            Text(disk.target),
            Text(disk.device.value + (f" ({disk.bus})" if disk.bus else "")),
            Text(disk.format or "-"),
            path,
            Text(format_bytes(disk.virtual_size)),
            Text(format_bytes(disk.allocation)),
        )
    return table


def nics_table(vm: VM) -> RenderableType:
    """Every network interface."""
    if not vm.nics:
        return Text("no network interfaces", style="dim")
    table = Table(expand=True, box=None, header_style="bold", pad_edge=False)
    for column in ("MAC", "type", "source", "model"):
        table.add_column(column, overflow="fold")
    for nic in vm.nics:
        table.add_row(*(Text(v or "-") for v in (nic.mac, nic.type, nic.source, nic.model)))
    return table


def firmware(vm: VM) -> Text:
    """NVRAM and TPM."""
    text = Text()
    text.append("NVRAM  ", style="bold")
    text.append(vm.nvram or "none")
    text.append("\n  TPM  ", style="bold")
    text.append("yes" if vm.tpm else "no")
    return text


def warnings(vm: VM) -> Text:
    """What the inventory could not make sense of."""
    if not vm.warnings:
        return Text("none", style="dim")
    return Text("\n".join(f"• {w}" for w in vm.warnings), style="yellow")


class VMDetailsScreen(ModalScreen[None]):
    """Everything the inventory knows about one VM; escape closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "dismiss", "Close"),
    ]

    def __init__(self, host: str, vm: VM, xml: XMLLoader | None = None) -> None:
        super().__init__(classes="details")
        self.host = host
        self.vm = vm
        self.xml = xml

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog") as dialog:
            dialog.border_title = Content.assemble((self.vm.name, "bold"), f" on {self.host}")
            dialog.border_subtitle = "esc closes"
            yield Static(summary(self.vm), id="summary")
            for title, body, section in (
                ("Disks", disks_table(self.vm), "disks"),
                ("Network interfaces", nics_table(self.vm), "nics"),
                ("Firmware", firmware(self.vm), "firmware"),
                ("Warnings", warnings(self.vm), "warnings"),
            ):
                yield Static(Content(title), classes="section-title")
                yield Static(body, id=section, classes="section")
            if self.xml is not None:
                yield Static(Content("Domain XML"), classes="section-title")
                yield Static(Text("reading…", style="dim"), id="xml", classes="section")

    def on_mount(self) -> None:
        if self.xml is not None:
            self._load_xml(self.xml)

    @work(exit_on_error=False)
    async def _load_xml(self, loader: XMLLoader) -> None:
        target = self.query_one("#xml", Static)
        try:
            xml = await loader()
        except Exception as exc:  # the rest of the details stay useful without the XML
            target.update(Text(f"could not read the domain XML: {exc}", style="red"))
            return
        target.update(Syntax(xml, "xml", word_wrap=True, theme="ansi_dark"))
