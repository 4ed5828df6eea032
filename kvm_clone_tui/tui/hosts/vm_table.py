"""A host's VMs as a table that changes one row at a time, with marks and a name filter."""

from __future__ import annotations

import gc
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable

from kvm_clone_tui.api.models import VM, DiskDevice, VMState
from kvm_clone_tui.api.units import format_bytes
from kvm_clone_tui.tui.hosts.drag_source import DragSource

MARK = "●"
SCROLLBAR = 2  # cells a vertical scrollbar takes


@dataclass(frozen=True)
class Column:
    """One column; the lower its ``keep`` rank, the longer it stays when the pane narrows."""

    key: str
    header: str
    right: bool
    keep: int


COLUMNS: tuple[Column, ...] = (
    Column("name", "Name", right=False, keep=0),
    Column("state", "State", right=False, keep=1),
    Column("vcpus", "vCPU", right=True, keep=3),
    Column("memory", "Memory", right=True, keep=2),
    Column("disks", "Disks", right=True, keep=6),
    Column("allocated", "Allocated", right=True, keep=4),
    Column("virtual", "Virtual", right=True, keep=5),
)

STATE_STYLES: dict[VMState, str] = {
    VMState.RUNNING: "bold green",
    VMState.PAUSED: "yellow",
    VMState.SHUTTING_DOWN: "yellow",
    VMState.BLOCKED: "yellow",
    VMState.SUSPENDED: "cyan",
    VMState.CRASHED: "bold red",
    VMState.SHUT_OFF: "dim",
    VMState.UNKNOWN: "dim",
}


def vm_cells(vm: VM, *, marked: bool, mark_style: Style) -> dict[str, Text]:
    """The cells of ``vm``'s row by column key; the name cell starts with the mark (2 cells)."""
    disks = sum(1 for d in vm.disks if d.device is DiskDevice.DISK)
    name = Text(f"{MARK} " if marked else "  ", style=mark_style if marked else "")
    name.append(vm.name, style=mark_style if marked else "")  # a Text: never read as markup
    values = {
        "name": name,
        "state": Text(vm.state.value, style=STATE_STYLES[vm.state]),
        "vcpus": Text(str(vm.vcpus)),
        "memory": Text(format_bytes(vm.memory_kib * 1024)),
        "disks": Text(str(disks)),
        "allocated": Text(format_bytes(vm.allocation)),
        "virtual": Text(format_bytes(vm.virtual_size)),
    }
    for column in COLUMNS:
        if column.right:
            values[column.key].justify = "right"
    return values


def text_width(text: str) -> int:
    """Cells that ``text`` takes on its longest line (what Textual measures a cell as)."""
    return max((cell_len(line) for line in text.splitlines()), default=0)


MARK_WIDTH = max(text_width(f"{MARK} "), 2)  # the name cell's prefix, marked or not


def content_widths(vms: Iterable[VM]) -> dict[str, int]:
    """The widest cell of each column (header included), without building the cells."""
    widths = {c.key: text_width(c.header) for c in COLUMNS}
    for vm in vms:
        disks = sum(1 for d in vm.disks if d.device is DiskDevice.DISK)
        for key, width in (
            ("name", text_width(vm.name) + MARK_WIDTH),
            ("state", len(vm.state.value)),
            ("vcpus", len(str(vm.vcpus))),
            ("memory", len(format_bytes(vm.memory_kib * 1024))),
            ("disks", len(str(disks))),
            ("allocated", len(format_bytes(vm.allocation))),
            ("virtual", len(format_bytes(vm.virtual_size))),
        ):
            if width > widths[key]:
                widths[key] = width
    return widths


def fitting_columns(vms: Iterable[VM], width: int, padding: int) -> tuple[str, ...]:
    """The columns that fit in ``width`` cells, dropping the least useful first."""
    return columns_for(content_widths(vms), width, padding)


def columns_for(widths: dict[str, int], width: int, padding: int) -> tuple[str, ...]:
    """The columns whose content ``widths`` fit in ``width`` cells, least useful dropped first."""
    keep: set[str] = set()
    used = 0
    for column in sorted(COLUMNS, key=lambda c: c.keep):
        needed = widths[column.key] + 2 * padding
        if keep and used + needed > width:
            break
        keep.add(column.key)
        used += needed
    return tuple(c.key for c in COLUMNS if c.key in keep)


class GCHold:
    """Python's cyclic garbage collector held off while tables fill and paint (see ``show``).

    A full collection walks every object of the app: 100-250 ms once a few 500-VM tables
    exist, and the thousands of cells a table load allocates are what sets it off, so it used
    to land between an inventory's arrival and its first paint (Textual holds it off the same
    way during smooth scrolling, ``App.PAUSE_GC_ON_SCROLL``). Holds nest; the collector is
    enabled again by the last release, and only if a hold disabled it.
    """

    holds = 0
    disabled = False  # by a hold (not by someone else)

    @classmethod
    def hold(cls) -> None:
        """Hold off collections until the matching :meth:`release`."""
        if cls.holds == 0 and gc.isenabled():
            gc.disable()
            cls.disabled = True
        cls.holds += 1

    @classmethod
    def release(cls) -> None:
        """End one hold; the last one lets the collector run again."""
        cls.holds = max(0, cls.holds - 1)
        if cls.holds == 0 and cls.disabled:
            cls.disabled = False
            gc.enable()


def _same(a: Text, b: Text) -> bool:
    return a.plain == b.plain and a.style == b.style and a.spans == b.spans


class VMTable(DragSource, DataTable[Text], can_focus=True):  # the mixin would say False
    """The VMs of one host, sorted by name, keyed by name.

    :meth:`show` loads a whole inventory; :meth:`apply` applies one VM's change by touching only
    that row, so a host with hundreds of VMs stays responsive under a stream of events. Columns
    that do not fit the pane's width are left out, least useful first (maximize the pane from
    the command palette to see them all). A row can be dragged with the mouse (a marked row
    drags every marked VM): see :class:`DragSource`.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "scroll_top", "First VM", show=False),
        Binding("G", "scroll_bottom", "Last VM", show=False),
        Binding("space", "toggle_mark", "Mark"),
        Binding("enter", "select_cursor", "Details"),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {*DataTable.COMPONENT_CLASSES, "vmtable--marked"}

    class MarksChanged(Message):
        """The set of marked VMs changed."""

        def __init__(self, table: VMTable) -> None:
            super().__init__()
            self.table = table

    class ColumnsChanged(Message):
        """Columns were left out or brought back to fit the width."""

    def __init__(self, *, pattern: re.Pattern[str] | None = None, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.vms: dict[str, VM] = {}
        self.marked: set[str] = set()
        self.pattern = pattern
        self.shown_columns: tuple[str, ...] = ()
        self._gc_held = False
        self._set_columns(tuple(c.key for c in COLUMNS))

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._restyle_marked())

    def on_unmount(self) -> None:
        self._release_gc()

    def on_resize(self, event: events.Resize) -> None:
        self._fit_columns()

    # -- what is shown ---------------------------------------------------------------------------

    def matches(self, vm: VM) -> bool:
        """Whether ``vm`` passes the filter (a regex searched in its name and its state)."""
        return self.pattern is None or bool(
            self.pattern.search(vm.name) or self.pattern.search(vm.state.value)
        )

    @property
    def visible_count(self) -> int:
        """How many VMs pass the filter."""
        return self.row_count

    @property
    def hidden_columns(self) -> int:
        """How many columns the pane is too narrow for."""
        return len(COLUMNS) - len(self.shown_columns)

    @property
    def current_name(self) -> str | None:
        """The name of the VM under the cursor."""
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def current_vm(self) -> VM | None:
        """The VM under the cursor."""
        name = self.current_name
        return None if name is None else self.vms.get(name)

    def marked_vms(self) -> list[VM]:
        """The marked VMs, by name."""
        return [self.vms[name] for name in sorted(self.marked) if name in self.vms]

    def show(self, vms: Iterable[VM]) -> None:
        """Show a whole inventory (keeping the cursor's VM and the marks that still exist).

        The garbage collector is held off (:class:`GCHold`) until the screen has been
        refreshed with the rows: the first paint of a big inventory does not wait for a
        collection.
        """
        if not self._gc_held and self.is_attached:
            self._gc_held = True
            GCHold.hold()
            if not self.call_after_refresh(self._release_gc):
                self._release_gc()  # closing: no refresh will come
        self.vms = {vm.name: vm for vm in vms}
        self.marked &= set(self.vms)
        self._refill()

    def set_filter(self, pattern: re.Pattern[str] | None) -> None:
        """Show only the VMs whose name or state ``pattern`` finds (None: all of them)."""
        self.pattern = pattern
        self._refill()

    def apply(self, name: str, vm: VM | None) -> None:
        """One VM appeared (or changed) as ``vm``, or disappeared (``vm`` None)."""
        old = self.vms.pop(name, None)
        if vm is None:
            self.marked.discard(name)
        else:
            self.vms[name] = vm
        shown = name in self.rows
        wanted = vm is not None and self.matches(vm)
        if shown and not wanted:
            self.remove_row(name)
        elif wanted and not shown:
            assert vm is not None
            self._insert(vm)
        elif wanted and shown:
            assert vm is not None and old is not None
            self._update_row(old, vm)

    def drag_items(self, event: events.MouseDown) -> tuple[str, ...]:
        """A press on a row drags its VM, or every marked VM when the row is marked."""
        row = event.style.meta.get("row")
        if not isinstance(row, int) or not 0 <= row < self.row_count:
            return ()  # the header, or below the last row
        name = self.ordered_rows[row].key.value
        if name is None:
            return ()
        return tuple(sorted(self.marked)) if name in self.marked else (name,)

    def _release_gc(self) -> None:
        if self._gc_held:
            self._gc_held = False
            GCHold.release()

    # -- marks -----------------------------------------------------------------------------------

    def action_toggle_mark(self) -> None:
        """Mark or unmark the VM under the cursor, then move down (as in file managers)."""
        name = self.current_name
        if name is None:
            return
        self.marked.symmetric_difference_update({name})
        self._update_row(self.vms[name], self.vms[name], force=True)
        self.action_cursor_down()
        self.post_message(self.MarksChanged(self))

    # -- rows and columns ------------------------------------------------------------------------

    def _set_columns(self, keys: tuple[str, ...]) -> None:
        self.clear(columns=True)
        self.shown_columns = keys
        for column in COLUMNS:
            if column.key in keys:
                label = Text(column.header, justify="right" if column.right else "left")
                self.add_column(label, key=column.key)

    def _shown(self) -> list[VM]:
        """The VMs that pass the filter, by name."""
        return [self.vms[n] for n in sorted(n for n, vm in self.vms.items() if self.matches(vm))]

    def _refill(self) -> None:
        """Fit the columns and show the VMs again (their widths measured once for both)."""
        shown = self._shown()
        widths = content_widths(shown)
        if not self._fit_columns(shown, widths):
            self._rebuild(None, shown, widths)

    def _fit_columns(
        self, shown: list[VM] | None = None, widths: dict[str, int] | None = None
    ) -> bool:
        """Show the columns that fit; True when they changed (and the rows were rebuilt)."""
        width = self.size.width
        if width <= SCROLLBAR:
            return False  # not laid out yet
        shown = self._shown() if shown is None else shown
        widths = content_widths(shown) if widths is None else widths
        room = self.parent.size.height if isinstance(self.parent, Widget) else self.size.height
        if len(shown) + 1 > room:  # rows and header overflow: a vertical scrollbar appears
            width -= SCROLLBAR
        keys = columns_for(widths, width, self.cell_padding)
        if keys == self.shown_columns:
            return False
        keep = self.current_name
        self._set_columns(keys)
        self._rebuild(keep, shown, widths)
        self.post_message(self.ColumnsChanged())
        return True

    def _mark_style(self) -> Style:
        return self.get_component_rich_style("vmtable--marked", partial=True)

    def _cells(self, vm: VM) -> dict[str, Text]:
        cells = vm_cells(vm, marked=vm.name in self.marked, mark_style=self._mark_style())
        return {key: cells[key] for key in self.shown_columns}

    def _rebuild(
        self,
        keep: str | None = None,
        shown: list[VM] | None = None,
        widths: dict[str, int] | None = None,
    ) -> None:
        """Show ``shown`` (the VMs that pass the filter), sized without measuring each cell.

        DataTable measures every cell of every new row on its next idle (``measure`` on each
        ``Text``: ~0.3 ms a row, 150 ms for 500 VMs on the one event loop). The widths are
        known from the VMs' fields (:func:`content_widths`, exact: the tests compare them with
        DataTable's own measuring), so the rows are added as already measured.
        """
        keep = keep or self.current_name
        shown = self._shown() if shown is None else shown
        widths = content_widths(shown) if widths is None else widths
        self.clear()
        for column in self.ordered_columns:
            key = column.key.value
            if key is not None:
                column.content_width = max(column.content_width, widths[key])
        for vm in shown:
            self.add_row(*self._cells(vm).values(), key=vm.name)
        self._new_rows.clear()  # measured above; the virtual size is still recomputed
        if keep is not None and keep in self.rows:
            self.move_cursor(row=self.get_row_index(keep), animate=False)

    def _insert(self, vm: VM) -> None:
        keep = self.current_name
        self.add_row(*self._cells(vm).values(), key=vm.name)
        self.sort("name", key=lambda cell: cell.plain[2:])  # after the mark
        if keep is not None:
            self.move_cursor(row=self.get_row_index(keep), animate=False, scroll=False)

    def _update_row(self, old: VM, new: VM, *, force: bool = False) -> None:
        before = None if force else self._cells(old)
        for key, cell in self._cells(new).items():
            if before is None or not _same(before[key], cell):
                self.update_cell(new.name, key, cell, update_width=True)

    def _restyle_marked(self) -> None:
        for name in self.marked:
            if name in self.rows:
                self._update_row(self.vms[name], self.vms[name], force=True)
