"""Which clone to sync and how: its name on the destination, the mode, the undo checkpoint, and
the engine's plan for them, live.

Every change of the form is planned again after a pause in typing (:class:`PlanningDialog`,
``client.plan_sync``): the mode and why, the source checkpoint the sync starts from and the one
it leaves, whether it can be undone, and what refuses it. Enter (or ctrl+s) syncs as soon as the
plan for the form as it is says yes; a refused plan keeps the dialog open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.widgets import Button, Checkbox, Input, Label, RadioButton, RadioSet, Static

from kvm_clone_tui.api.validation import ValidationError, validate_vm_name
from kvm_clone_tui.tui.common.planning_dialog import PlanningDialog
from kvm_clone_tui.tui.plan_text import plan_failure, sync_plan_renderable
from kvm_clone_tui.tui.sync.session import SYNC_MODES, SyncSettings

if TYPE_CHECKING:
    from kvm_clone_tui.api.plans import SyncPlan

#: Plans the sync: (the clone's name, settings) -> the engine's plan.
SyncPlanner = Callable[[str, SyncSettings], Awaitable["SyncPlan"]]
HINT = (
    "The clone (its name on the destination) must be shut off and cloned from this VM. Only "
    "what changed moves: the blocks the source's dirty bitmap marks (bitmap mode; the source "
    "may run) or the blocks whose hashes differ (hash mode; the source shut off)."
)


@dataclass(frozen=True)
class SyncChoice:
    """What the dialog decided: the clone's name and how to sync it."""

    target: str
    settings: SyncSettings


class SyncDialog(PlanningDialog[SyncChoice, "SyncPlan | str", SyncChoice | None]):
    """Dismisses with the clone's name and settings, or None when cancelled."""

    START_BUTTON = "#sync"
    READY_SUBTITLE = "enter syncs · esc cancels"
    PROBLEM_SUBTITLE = "fix the name to plan the sync"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "sync", "Sync (when the plan allows)"),
        Binding("escape", "dismiss(None)", "Cancel"),
    ]

    def __init__(
        self,
        source: str,
        vm: str,
        dest: str,
        target: str,
        settings: SyncSettings | None = None,
        planner: SyncPlanner | None = None,
    ) -> None:
        settings = settings or SyncSettings()
        super().__init__(SyncChoice(target, settings), classes="sync-dialog")
        self.source = source
        self.vm = vm
        self.dest = dest
        self.target = target
        self.settings = settings
        self.planner = planner
        self.plan: SyncPlan | str | None = None  # the plan, or why there is none
        self._submit_when_planned = False

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog") as dialog:
            dialog.border_title = Content(f"Sync {self.vm} ({self.source}) to {self.dest}")
            dialog.border_subtitle = "enter syncs · esc cancels"
            yield Static(Content(HINT), classes="hint")
            with Horizontal(classes="field"):
                yield Label("clone", classes="field-label")
                yield Input(self.target, id="target", compact=True)
            yield Label(classes="error")
            with Horizontal(classes="field"):
                yield Label("mode", classes="field-label")
                yield RadioSet(
                    *(
                        RadioButton(m, m == self.settings.mode, id=f"mode-{m}", compact=True)
                        for m in SYNC_MODES
                    ),
                    id="mode",
                    compact=True,
                )
            with Horizontal(classes="field"):
                yield Label("", classes="field-label")
                yield Checkbox(
                    "keep a checkpoint (undo)",
                    self.settings.checkpoint,
                    id="checkpoint",
                    compact=True,
                )
            yield Static(Content("Plan"), classes="section-title")
            yield Static(Text("planning…", style="dim"), id="plan", classes="plan")
            with Horizontal(classes="buttons"):
                yield Button("Sync", variant="primary", id="sync", disabled=True)
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one(Input).focus()
        self.plan_now()

    # -- the form --------------------------------------------------------------------------------

    def read_form(self) -> SyncChoice:
        """The fields as they are now."""
        mode = SYNC_MODES[max(0, self.query_one("#mode", RadioSet).pressed_index)]
        checkpoint = self.query_one("#checkpoint", Checkbox).value
        name = self.query_one(Input).value.strip()
        return SyncChoice(name, SyncSettings(mode, checkpoint))

    def form_problem(self, form: SyncChoice) -> str | None:
        """Why the clone's name cannot be planned."""
        try:
            validate_vm_name(form.target)
        except ValidationError as exc:
            return str(exc)
        if form.target == self.vm and self.dest == self.source:
            return "on the same host the clone has another name"
        return None

    def form_changed(self) -> None:
        """A change cancels a sync asked for while planning."""
        self._submit_when_planned = False

    def can_plan(self) -> bool:
        """False (and says so) when the source cannot plan syncs."""
        if self.planner is None:
            self.query_one("#plan", Static).update(
                Text("this source cannot plan syncs", style="bold red")
            )
            return False
        return True

    async def make_plan(self, form: SyncChoice) -> SyncPlan | str:
        """The engine's sync plan, or why there is none."""
        assert self.planner is not None
        try:
            return await self.planner(form.target, form.settings)
        except Exception as exc:  # unreachable host, no such clone: shown, never raised
            return str(exc) or type(exc).__name__

    def show_plan(self, form: SyncChoice, planned: SyncPlan | str) -> None:
        """The plan under the form."""
        self.plan = planned
        shown = self.query_one("#plan", Static)
        shown.remove_class("-stale")
        if isinstance(planned, str):
            shown.update(plan_failure(self.vm, planned))
        else:
            shown.update(sync_plan_renderable(planned))

    def plan_shown(self, form: SyncChoice) -> None:
        """Sync now if Enter was pressed while planning and the plan allows it."""
        if self._submit_when_planned:
            self._submit_when_planned = False
            if self.ready:
                self.dismiss(form)
            else:
                self.app.bell()

    # -- syncing ---------------------------------------------------------------------------------

    @property
    def has_plan(self) -> bool:
        """True once the form was planned."""
        return self.plan is not None

    def plan_ok(self) -> bool:
        """True when nothing refuses the plan."""
        return self.plan is not None and not isinstance(self.plan, str) and self.plan.ok

    def action_sync(self) -> None:
        """Sync now when the plan allows it; while planning, as soon as the plan is ready."""
        form = self.read_form()
        problem = self.form_problem(form)
        self.show_problem(problem)
        if problem is not None:
            self.app.bell()
            return
        if self.ready:
            self.dismiss(form)
            return
        if self.planned_form == form and self.plan is not None:
            self.app.bell()  # refused, or could not plan: the plan says why
            return
        self._submit_when_planned = True
        self.dialog_subtitle("planning… syncs when the plan allows it")
        if self.debouncing:
            self.plan_now()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_sync()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "sync":
            self.action_sync()
        else:
            self.dismiss(None)
