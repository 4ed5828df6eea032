"""The TUI driven with Pilot against the lab's real hosts (real SSH, real libvirt, real events)."""

from __future__ import annotations

import asyncio
import dataclasses

from textual.widgets import Input, Label

from kvm_clone_tui.api.config import Config
from kvm_clone_tui.api.models import HostInventory
from kvm_clone_tui.lab.manager import Lab
from kvm_clone_tui.tui.app import KVMCloneApp
from kvm_clone_tui.tui.common.confirm import ConfirmScreen
from kvm_clone_tui.tui.common.help import HelpScreen, help_entries
from kvm_clone_tui.tui.hosts.add_host import AddHostScreen
from kvm_clone_tui.tui.hosts.details import VMDetailsScreen
from kvm_clone_tui.tui.hosts.empty_state import EmptyState
from kvm_clone_tui.tui.hosts.feeds import Listener
from kvm_clone_tui.tui.hosts.filter_bar import FilterBar
from kvm_clone_tui.tui.hosts.pane import HostPane, PaneState
from kvm_clone_tui.tui.hosts.status_bar import StatusBar
from kvm_clone_tui.tui.hosts.vm_table import MARK, VMTable
from tests.tui.conftest import SIZE, screen_text, wait_until

SAMPLE_VMS = {"web01", "db01", "installer", "linked01", "app.v2", "writer"}  # + uefi01 with OVMF
UNREACHABLE = "root@127.0.0.99"


def lab_vms(lab: Lab, host: str) -> set[str]:
    return {n for n in lab.runtime(host).virsh("list", "--all", "--name").splitlines() if n}


def settled(app: KVMCloneApp) -> bool:
    return bool(app.panes) and all(p.state is not PaneState.CONNECTING for p in app.panes)


def rows(pane: HostPane) -> list[str]:
    table = pane.table
    return [str(key.value) for key in (row.key for row in table.ordered_rows)]


def cell(pane: HostPane, vm: str, column: str) -> str:
    return pane.table.get_cell(vm, column).plain


def focused_pane(app: KVMCloneApp) -> HostPane | None:
    focused = app.focused
    if focused is None:
        return None
    return next((n for n in focused.ancestors_with_self if isinstance(n, HostPane)), None)


async def test_panes_fill_with_the_lab_vms(lab: Lab, lab_config: Config) -> None:
    app = KVMCloneApp(["alpha", "beta", "gamma"], config=lab_config)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: settled(app), "the three hosts to connect")
        alpha, beta, gamma = app.panes
        assert [p.state for p in app.panes] == [PaneState.CONNECTED] * 3
        names = lab_vms(lab, "alpha")  # other tests may define VMs on beta and gamma meanwhile
        assert names >= SAMPLE_VMS
        assert rows(alpha) == sorted(names)
        assert alpha.title_text.startswith("alpha · libvirt ")
        assert alpha.title_text.endswith(f" · {len(names)} VMs")
        for pane in (beta, gamma):
            assert pane.inventory is not None
            assert rows(pane) == sorted(vm.name for vm in pane.inventory.vms)
        assert cell(alpha, "db01", "state") == "shut-off"
        assert cell(alpha, "db01", "vcpus") == "2"
        assert cell(alpha, "db01", "memory") == "1.0 GiB"
        assert cell(alpha, "writer", "state") == "running"
        assert focused_pane(app) is alpha
        assert "3 hosts · 3 connected" in str(app.query_one(StatusBar).render())
    assert app._own_client is not None and not app._own_client.connected  # closed on exit


async def test_keyboard_navigation_and_marking(lab: Lab, lab_config: Config) -> None:
    app = KVMCloneApp(["alpha", "beta"], config=lab_config)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: settled(app), "alpha and beta to connect")
        alpha, beta = app.panes
        names = rows(alpha)
        table = alpha.table
        assert table.current_name == names[0]
        await pilot.press("j", "j")
        assert table.current_name == names[2]
        await pilot.press("k")
        assert table.current_name == names[1]
        await pilot.press("G")
        assert table.current_name == names[-1]
        await pilot.press("g")
        assert table.current_name == names[0]
        await pilot.press("down")
        assert table.current_name == names[1]

        await pilot.press("space", "space")  # marks names[1] and names[2], moving down
        assert table.marked == {names[1], names[2]}
        assert table.current_name == names[3]
        assert cell(alpha, names[1], "name") == f"{MARK} {names[1]}"
        assert cell(alpha, names[0], "name") == f"  {names[0]}"
        assert [vm.name for vm in app.selection()["alpha"]] == names[1:3]
        assert "2 marked" in str(app.query_one(StatusBar).render())
        assert "2 marked" in str(alpha.border_subtitle)
        await pilot.press("k", "space")  # unmark names[2]
        assert table.marked == {names[1]}

        await pilot.press("l")
        assert focused_pane(app) is beta
        await pilot.press("l")  # wraps around
        assert focused_pane(app) is alpha
        await pilot.press("h")
        assert focused_pane(app) is beta
        await pilot.press("tab")
        assert focused_pane(app) is alpha

        await pilot.click(beta)  # a click in a pane focuses it
        assert focused_pane(app) is beta
        third = rows(alpha)[2]
        await pilot.click(alpha.table, offset=(5, 3))  # the third row (under the header)
        assert focused_pane(app) is alpha
        assert table.current_name == third


async def test_filter_by_regex(lab: Lab, lab_config: Config) -> None:
    app = KVMCloneApp(["alpha"], config=lab_config)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: settled(app), "alpha to connect")
        (alpha,) = app.panes
        everything = rows(alpha)
        bar = app.query_one(FilterBar)
        assert not bar.display
        await pilot.press("slash")
        assert bar.display and isinstance(app.focused, Input)
        await pilot.press(*"^(web|db)")
        await wait_until(pilot, lambda: rows(alpha) == ["db01", "web01"], "the filter to apply")
        assert "2/" in str(alpha.border_subtitle)

        app.query_one("#filter-input", Input).value = "web(("
        await pilot.pause()
        error = bar.query_one(".error", Label)
        assert error.display and "bad regex" in str(error.render())
        assert rows(alpha) == ["db01", "web01"]  # the last valid filter stays
        await pilot.press("enter")  # refused while invalid: the cursor stays in the filter
        assert isinstance(app.focused, Input)

        app.query_one("#filter-input", Input).value = "running"  # states match too
        await wait_until(pilot, lambda: rows(alpha) == ["writer"], "the state filter")
        await pilot.press("enter")
        assert focused_pane(app) is alpha and bar.display

        await pilot.press("escape")  # esc in the table clears the filter
        await wait_until(pilot, lambda: rows(alpha) == everything, "the filter to clear")
        assert not bar.display
        assert app.filter_pattern is None

        await pilot.press("slash", *"zzz-no-such-vm")
        await wait_until(pilot, lambda: rows(alpha) == [], "an empty result")
        assert "no VM matches the filter" in screen_text(app)
        await pilot.press("escape")  # esc in the filter line clears it too
        await wait_until(pilot, lambda: rows(alpha) == everything, "the filter to clear")
        assert focused_pane(app) is alpha


async def test_details_modal(lab: Lab, lab_config: Config) -> None:
    app = KVMCloneApp(["alpha"], config=lab_config)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: settled(app), "alpha to connect")
        (alpha,) = app.panes
        alpha.table.move_cursor(row=alpha.table.get_row_index("web01"))
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, VMDetailsScreen), "the details")
        text = screen_text(app)
        for expected in (
            "web01 on alpha",
            "vda",
            "qcow2",
            "/var/lib/libvirt/images/web01.qcow2",
            "8.0 GiB",
            "52:54:00:6c:ab:01",
            "NVRAM",
            "TPM",
            "Warnings",
        ):
            assert expected in text, expected
        await pilot.press("a", "slash")  # pane actions wait until the dialog is closed
        assert isinstance(app.screen, VMDetailsScreen) and not app.query_one(FilterBar).display
        await pilot.press("escape")
        assert not isinstance(app.screen, VMDetailsScreen)

        alpha.table.move_cursor(row=alpha.table.get_row_index("linked01"))
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, VMDetailsScreen), "the details")
        assert "/var/lib/libvirt/images/base/bookworm-base.qcow2" in screen_text(app)
        await pilot.press("q")

        alpha.table.move_cursor(row=alpha.table.get_row_index("db01"))
        await pilot.click(alpha.table, offset=(5, alpha.table.cursor_row + 1))  # click = select
        await wait_until(pilot, lambda: isinstance(app.screen, VMDetailsScreen), "the details")
        text = screen_text(app)
        assert "db01/sys/disk.img" in text and "db01/data/disk.img" in text
        await pilot.press("escape")


async def test_add_and_remove_host_panes(lab: Lab, lab_config: Config) -> None:
    app = KVMCloneApp(["alpha"], config=lab_config)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: settled(app), "alpha to connect")
        await pilot.press("a")
        assert isinstance(app.screen, AddHostScreen)
        spec = app.screen.query_one("#spec", Input)
        error = app.screen.query_one(".error", Label)
        await pilot.press(*"beta;id")
        assert error.display and "shell metacharacter" in str(error.render())
        await pilot.press("enter")
        assert isinstance(app.screen, AddHostScreen)  # refused, the dialog stays
        spec.value = "alpha"
        await pilot.press("enter")
        assert "already open" in str(error.render())
        spec.value = "beta"
        await pilot.pause()
        assert not error.display
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(app.panes) == 2 and settled(app), "beta's pane")
        beta = app.panes[1]
        assert beta.host == "beta" and beta.state is PaneState.CONNECTED
        assert focused_pane(app) is beta

        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert len(app.panes) == 2
        await pilot.press("d", "y")
        await wait_until(pilot, lambda: not app.query("#" + str(beta.id)), "beta's pane to go")
        assert [p.host for p in app.panes] == ["alpha"]
        assert focused_pane(app) is app.panes[0]

        await pilot.press("d", "y")
        await wait_until(pilot, lambda: bool(app.query(EmptyState)), "the empty screen")
        assert app.panes == [] and "No hosts yet" in screen_text(app)

        await pilot.press("a")
        await pilot.press(*"gamma", "enter")  # adding to the empty screen
        await wait_until(pilot, lambda: settled(app), "gamma's pane")
        assert not app.query(EmptyState) and app.panes[0].host == "gamma"

        await pilot.press("a", "escape")
        assert len(app.panes) == 1


async def test_an_unreachable_host_shows_its_error_and_the_others_work(
    lab: Lab, lab_config: Config
) -> None:
    config = dataclasses.replace(
        lab_config, ssh=dataclasses.replace(lab_config.ssh, connect_retries=0)
    )
    app = KVMCloneApp(["alpha", UNREACHABLE], config=config)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: settled(app), "both hosts to settle")
        alpha, bad = app.panes
        assert alpha.state is PaneState.CONNECTED
        assert bad.state is PaneState.FAILED and bad.has_class("-failed")
        assert bad.title_text.startswith(f"{UNREACHABLE} · error: ")
        assert "refused" in bad.title_text and bad.title_text.endswith("r retry")
        assert "press r to retry" in screen_text(app)
        assert "1 failed" in str(app.query_one(StatusBar).render())

        await pilot.press("j")  # alpha still answers
        assert alpha.table.current_name == rows(alpha)[1]

        await pilot.press("l")
        assert focused_pane(app) is bad
        attempts: list[str] = []
        open_host = app.feeds.open

        async def counting_open(host: str, listener: Listener) -> HostInventory:
            attempts.append(host)
            return await open_host(host, listener)

        app.feeds.open = counting_open  # type: ignore[method-assign]
        await pilot.press("r")  # retry: connecting again, and failing again
        await wait_until(pilot, lambda: attempts == [UNREACHABLE], "the retry")
        await wait_until(pilot, lambda: bad.state is PaneState.FAILED, "the retry to fail")
        await pilot.press("d", "y")
        await wait_until(pilot, lambda: len(app.panes) == 1, "the failed pane to go")


async def test_a_vm_started_on_the_host_shows_running_live(lab: Lab, lab_config: Config) -> None:
    alpha_host = lab.runtime("alpha")
    app = KVMCloneApp(["alpha"], config=lab_config)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: settled(app), "alpha to connect")
        await pilot.press("d", "y")  # a pane closed and opened again gets the events too
        await wait_until(pilot, lambda: not app.panes, "alpha's pane to go")
        await pilot.press("a", *"alpha", "enter")
        await wait_until(pilot, lambda: settled(app), "alpha to be back")
        (alpha,) = app.panes
        assert cell(alpha, "app.v2", "state") == "shut-off"
        before = rows(alpha)
        rebuilds = 0
        clear = alpha.table.clear

        def counting_clear(columns: bool = False) -> VMTable:
            nonlocal rebuilds
            rebuilds += 1
            return clear(columns)

        alpha.table.clear = counting_clear  # type: ignore[method-assign]
        await asyncio.to_thread(alpha_host.virsh, "start", "app.v2")
        try:
            await wait_until(
                pilot, lambda: cell(alpha, "app.v2", "state") == "running", "app.v2 running", 60
            )
            assert rows(alpha) == before and rebuilds == 0  # one row changed, in place
        finally:
            await asyncio.to_thread(alpha_host.virsh, "destroy", "app.v2", check=False)
        await wait_until(
            pilot, lambda: cell(alpha, "app.v2", "state") == "shut-off", "app.v2 shut off", 60
        )


async def test_no_hosts_shows_how_to_add_one(lab_config: Config) -> None:
    app = KVMCloneApp([], config=dataclasses.replace(lab_config, default_hosts=()))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        text = screen_text(app)
        assert "No hosts yet" in text and "a  to add one" in text
        assert app.check_action("remove_host", ()) is False
        assert app.check_action("refresh", ()) is False
        await pilot.press("d", "r", "l")  # nothing to act on: nothing happens
        assert app.panes == []


async def test_command_palette_runs_the_actions(lab_config: Config) -> None:
    app = KVMCloneApp([], config=lab_config)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.press(*"add host")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, AddHostScreen), "add host")
        await pilot.press("escape")
        await pilot.press("ctrl+p", *"toggle dark", "enter")
        await wait_until(pilot, lambda: app.theme == "textual-light", "the light theme")
        await pilot.press("ctrl+p", *"help: keys")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")


async def test_help_lists_every_binding(lab_config: Config) -> None:
    app = KVMCloneApp([], config=lab_config)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.text()
        for _title, bindings in app.help_sections():
            for binding in bindings:
                assert app.get_key_display(binding) in text, binding
        for description in (
            "Add host",
            "Remove host",
            "Filter",
            "Mark",
            "Details",
            "Refresh",
            "Clone",
            "Jobs",
            "Cancel job",
            "Start the clone",
            "Roll back now",
            "Drag a VM",  # the mouse, which no binding lists
        ):
            assert description in text
        shown = {
            key
            for _title, bindings in app.help_sections()
            for entry in help_entries(app, bindings)
            for key in entry.keys
        }
        assert {
            "j",
            "k",
            "g",
            "G",
            "h",
            "l",
            "tab",
            "space",
            "/",
            "?",
            "a",
            "d",
            "r",
            "c",
            "J",
            "x",
            "^s",
            "^p",
        } <= shown
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
