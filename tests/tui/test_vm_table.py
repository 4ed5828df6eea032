"""The VM table on its own: incremental updates at 500 VMs, filter, marks, fitting columns."""

from __future__ import annotations

import dataclasses
import gc
import re
import time

from textual.app import App, ComposeResult
from textual.render import measure
from textual.widgets.data_table import ColumnKey

from kvm_clone_tui.api.models import VM, VMState
from kvm_clone_tui.tui.hosts.vm_table import COLUMNS, MARK, VMTable, fitting_columns


def make_vm(i: int, state: VMState = VMState.SHUT_OFF) -> VM:
    return VM(
        name=f"vm{i:03d}",
        uuid=f"uuid-{i}",
        state=state,
        vcpus=1 + i % 4,
        memory_kib=(256 + i) * 1024,
        autostart=False,
        persistent=True,
        domain_type="kvm",
    )


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield VMTable()


def names(table: VMTable) -> list[str]:
    return [str(row.key.value) for row in table.ordered_rows]


async def test_500_vms_change_one_row_at_a_time() -> None:
    app = TableApp()
    async with app.run_test(size=(200, 50)) as pilot:
        table = app.query_one(VMTable)
        vms = [make_vm(i) for i in range(500)]
        table.show(vms)
        await pilot.pause()
        assert table.row_count == 500 and names(table) == sorted(v.name for v in vms)
        table.move_cursor(row=250)
        rebuilds = 0
        clear = table.clear

        def counting_clear(columns: bool = False) -> VMTable:
            nonlocal rebuilds
            rebuilds += 1
            return clear(columns)

        table.clear = counting_clear  # type: ignore[method-assign]
        started = time.perf_counter()
        for i in range(0, 500, 2):  # 250 VMs start
            table.apply(f"vm{i:03d}", make_vm(i, VMState.RUNNING))
        elapsed = time.perf_counter() - started
        await pilot.pause()
        assert rebuilds == 0
        assert elapsed < 2.5, f"250 row updates took {elapsed:.2f}s"
        assert table.get_cell("vm010", "state").plain == "running"
        assert table.get_cell("vm011", "state").plain == "shut-off"
        assert table.current_name == "vm250"  # the cursor stays on its VM


async def test_added_removed_and_filtered_vms() -> None:
    app = TableApp()
    async with app.run_test(size=(200, 30)) as pilot:
        table = app.query_one(VMTable)
        table.show([make_vm(i) for i in (1, 3, 5)])
        table.move_cursor(row=1)
        table.apply("vm002", make_vm(2))  # added in its sorted place
        assert names(table) == ["vm001", "vm002", "vm003", "vm005"]
        assert table.current_name == "vm003"  # the cursor stays on its VM, not its index

        table.action_toggle_mark()
        assert table.marked == {"vm003"}
        assert table.get_cell("vm003", "name").plain == f"{MARK} vm003"
        table.apply("vm003", None)  # removed: its row and its mark go
        assert names(table) == ["vm001", "vm002", "vm005"] and table.marked == set()

        table.set_filter(re.compile("running"))
        assert names(table) == []
        table.apply("vm002", make_vm(2, VMState.RUNNING))  # now matches: appears
        assert names(table) == ["vm002"]
        table.apply("vm002", make_vm(2))  # no longer matches: disappears
        assert names(table) == []
        table.set_filter(None)
        assert names(table) == ["vm001", "vm002", "vm005"]

        hostile = dataclasses.replace(make_vm(9), name="[bold]x[/bold]")
        table.apply(hostile.name, hostile)  # names are text, never markup
        assert table.get_cell(hostile.name, "name").plain == "  [bold]x[/bold]"
        await pilot.pause()


def test_columns_are_left_out_least_useful_first() -> None:
    vms = [make_vm(1)]
    everything = tuple(c.key for c in COLUMNS)
    assert fitting_columns(vms, 200, 1) == everything
    narrow = fitting_columns(vms, 45, 1)
    assert narrow[:2] == ("name", "state") and "disks" not in narrow
    assert fitting_columns(vms, 5, 1) == ("name",)  # the name always stays


async def test_column_widths_are_what_datatable_would_measure() -> None:
    """The table adds a whole inventory without DataTable measuring each cell (it takes the
    widths from the VMs' fields): they must be exactly DataTable's own measure of every cell."""
    app = TableApp()
    async with app.run_test(size=(200, 30)) as pilot:
        table = app.query_one(VMTable)
        vms = [make_vm(i) for i in range(40)]
        vms += [
            dataclasses.replace(make_vm(100), name="データベース-01"),  # 2 cells a character
            dataclasses.replace(make_vm(101), name="[bold]x[/bold]", vcpus=128),
            dataclasses.replace(make_vm(102), memory_kib=3 * 1024**3, state=VMState.CRASHED),
        ]
        table.marked = {"データベース-01"}  # the mark widens the name cell by its own width
        table.show(vms)
        await pilot.pause()
        assert table.shown_columns == tuple(c.key for c in COLUMNS)
        for column in table.ordered_columns:
            cells = [*table.get_column(column.key), column.label]
            measured = max(measure(app.console, cell, 1) for cell in cells)
            assert column.content_width == measured, column.key.value
        assert table.columns[ColumnKey("name")].content_width == 2 + 2 * 6 + 3  # mark + name


async def test_the_garbage_collector_waits_for_the_first_paint() -> None:
    """A full collection (100-250 ms with a few big tables) must not land between an
    inventory's arrival and its first paint: it is held off until the screen is refreshed, and
    never left disabled (nor enabled when someone else had disabled it)."""
    assert gc.isenabled()
    vms = [make_vm(i) for i in range(500)]
    app = TableApp()
    async with app.run_test(size=(200, 50)) as pilot:
        table = app.query_one(VMTable)
        table.show(vms)
        assert not gc.isenabled()
        await pilot.pause()  # the refresh with the rows
        assert gc.isenabled() and table.row_count == 500

        gc.disable()  # someone else's (Textual's PAUSE_GC_ON_SCROLL, say)
        try:
            table.show(vms[:10])
            await pilot.pause()
            assert not gc.isenabled()
        finally:
            gc.enable()

        table.show(vms)  # the app closes before it refreshes again
    assert gc.isenabled()
