"""Which clone to sync and how: its name on the destination, the mode, the undo checkpoint, and
the engine's plan for them, live.

Every change of the form is planned again after :data:`DEBOUNCE_SECONDS` of quiet, in a worker
(``client.plan_sync``): the mode and why, the source checkpoint the sync starts from and the one
it leaves, whether it can be undone, and what refuses it. Enter (or ctrl+s) syncs as soon as the
plan for the form as it is says yes; a refused plan keeps the dialog open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Button, Checkbox, Input, Label, RadioButton, RadioSet, Static

from kvm_clone_tui.api.validation import ValidationError, validate_vm_name
from kvm_clone_tui.tui.plan_text import plan_failure, sync_plan_renderable
from kvm_clone_tui.tui.sync.session import SYNC_MODES, SyncSettings

if TYPE_CHECKING:
    from kvm_clone_tui.api.plans import SyncPlan

#: Plans the sync: (the clone's name, settings) -> the engine's plan.
SyncPlanner = Callable[[str, SyncSettings], Awaitable["SyncPlan"]]
DEBOUNCE_SECONDS = 0.4
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


class SyncDialog(ModalScreen[SyncChoice | None]):
    """Dismisses with the clone's name and settings, or None when cancelled."""

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
        super().__init__(classes="sync-dialog")
        self.source = source
        self.vm = vm
        self.dest = dest
        self.target = target
        self.settings = settings or SyncSettings()
        self.planner = planner
        self.form: SyncChoice = SyncChoice(target, self.settings)
        self.plan: SyncPlan | str | None = None  # the plan, or why there is none
        self.planned_form: SyncChoice | None = None
        self._timer: Timer | None = None
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
        self._plan_now()

    # -- the form --------------------------------------------------------------------------------

    def read_form(self) -> SyncChoice:
        """The fields as they are now."""
        mode = SYNC_MODES[max(0, self.query_one("#mode", RadioSet).pressed_index)]
        checkpoint = self.query_one("#checkpoint", Checkbox).value
        name = self.query_one(Input).value.strip()
        return SyncChoice(name, SyncSettings(mode, checkpoint))

    def _problem(self, name: str) -> str | None:
        try:
            validate_vm_name(name)
        except ValidationError as exc:
            return str(exc)
        if name == self.vm and self.dest == self.source:
            return "on the same host the clone has another name"
        return None

    def _show_problem(self, problem: str | None) -> None:
        error = self.query_one(".error", Label)
        error.update(Content(problem or ""))
        error.display = problem is not None

    @on(Input.Changed)
    @on(RadioSet.Changed)
    @on(Checkbox.Changed)
    def _changed(self) -> None:
        form = self.read_form()
        if form == self.form:
            return  # widgets report their initial values too
        self.form = form
        self._submit_when_planned = False
        self._set_ready(False)
        self.query_one("#plan").add_class("-stale")
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE_SECONDS, self._plan_now)

    def _plan_now(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        form = self.form
        problem = self._problem(form.target)
        self._show_problem(problem)
        if problem is not None:
            self.dialog_subtitle("fix the name to plan the sync")
            return
        if self.planner is None:
            self.query_one("#plan", Static).update(
                Text("this source cannot plan syncs", style="bold red")
            )
            return
        self.dialog_subtitle("planning…")
        self.query_one("#plan").add_class("-stale")
        self._plan(form)

    @work(exclusive=True, group="plan", exit_on_error=False)
    async def _plan(self, form: SyncChoice) -> None:
        assert self.planner is not None
        try:
            plan: SyncPlan | str = await self.planner(form.target, form.settings)
        except Exception as exc:  # unreachable host, no such clone: shown, never raised
            plan = str(exc) or type(exc).__name__
        if form != self.form:
            return  # the form changed meanwhile; its own plan is on the way
        self.plan, self.planned_form = plan, form
        shown = self.query_one("#plan", Static)
        shown.remove_class("-stale")
        if isinstance(plan, str):
            shown.update(plan_failure(self.vm, plan))
        else:
            shown.update(sync_plan_renderable(plan))
        self._set_ready(self.ready)
        if self._submit_when_planned:
            self._submit_when_planned = False
            if self.ready:
                self.dismiss(form)
            else:
                self.app.bell()

    # -- syncing ---------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True when the plan shown is for the form as it is and nothing refuses it."""
        plan = self.plan
        return (
            self.planned_form == self.form
            and plan is not None
            and not isinstance(plan, str)
            and plan.ok
        )

    def _set_ready(self, ready: bool) -> None:
        self.query_one("#sync", Button).disabled = not ready
        if ready:
            self.dialog_subtitle("enter syncs · esc cancels")
        elif self.planned_form == self.form and self.plan is not None:
            self.dialog_subtitle("refused: see the plan · esc cancels")

    def dialog_subtitle(self, text: str) -> None:
        """What the dialog is doing, in its bottom border."""
        self.query_one("#dialog").border_subtitle = text

    def action_sync(self) -> None:
        """Sync now when the plan allows it; while planning, as soon as the plan is ready."""
        form = self.read_form()
        problem = self._problem(form.target)
        self._show_problem(problem)
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
        if self._timer is not None:
            self._plan_now()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_sync()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "sync":
            self.action_sync()
        else:
            self.dismiss(None)
