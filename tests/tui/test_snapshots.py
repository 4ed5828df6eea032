"""Pictures of the main screen, the help and the details, compared with the accepted snapshots.

Fixed inventory so the picture is stable; real hosts are covered by test_app.py. Update after an
intended change with ``pytest tests/tui/test_snapshots.py --snapshot-update`` and look at the
new files in ``__snapshots__/`` before committing them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot

from kvm_clone_tui.tui.app import KVMCloneApp
from kvm_clone_tui.tui.widgets.host_pane import PaneState
from tests.tui.fake_source import lab_like_source

SnapCompare = Callable[..., bool]
SIZE = (130, 32)
HOSTS = ("alpha", "beta", "root@127.0.0.99")


def app() -> KVMCloneApp:
    return KVMCloneApp(HOSTS, source=lab_like_source())


async def settled(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, KVMCloneApp)
    while any(p.state is PaneState.CONNECTING for p in app.panes):
        await pilot.pause(0.01)
    await pilot.pause()


def test_main_screen(snap_compare: SnapCompare) -> None:
    """Three panes: alpha with two VMs marked and the cursor below them, beta empty, a failure."""
    assert snap_compare(
        app(), press=["j", "space", "space"], terminal_size=SIZE, run_before=settled
    )


def test_filtered(snap_compare: SnapCompare) -> None:
    """The filter line with a regex, and the panes showing what it matches."""
    press = ["slash", *"^(web|db)", "enter"]
    assert snap_compare(app(), press=press, terminal_size=SIZE, run_before=settled)


def test_help_screen(snap_compare: SnapCompare) -> None:
    """Every key binding, from the widgets' BINDINGS."""
    assert snap_compare(app(), press=["question_mark"], terminal_size=SIZE, run_before=settled)


def test_details_screen(snap_compare: SnapCompare) -> None:
    """installer: a disk and a read-only CD-ROM."""
    press = ["j", "j", "enter"]
    assert snap_compare(app(), press=press, terminal_size=SIZE, run_before=settled)
