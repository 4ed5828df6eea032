"""The clone dialog: new names, pool and options, and the engine's plan for each VM, live.

Every change of the form is planned again after :data:`DEBOUNCE_SECONDS` of quiet, in a worker
(``client.plan_clone``); Start stays disabled until every plan is current and free of conflicts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Button, Checkbox, Input, Label, RadioButton, RadioSet, Static

from kvm_clone_tui.api.options import CloneOptions
from kvm_clone_tui.api.plans import ClonePlan
from kvm_clone_tui.tui.clone.setup import (
    COMPRESSIONS,
    TRANSFERS,
    CloneForm,
    CloneRequest,
    clone_options,
    form_problem,
    initial_form,
)
from kvm_clone_tui.tui.plan_text import plan_failure, plan_renderable

#: Plans one VM: (VM name, options) -> the engine's plan.
Planner = Callable[[str, CloneOptions], Awaitable[ClonePlan]]
DEBOUNCE_SECONDS = 0.4


class CloneDialog(ModalScreen[list[ClonePlan] | None]):
    """Dismisses with the plans to run (all free of conflicts), or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "start", "Start the clone"),
        Binding("escape", "dismiss(None)", "Cancel"),
    ]

    def __init__(
        self, request: CloneRequest, defaults: CloneOptions, pool: str, planner: Planner
    ) -> None:
        super().__init__(classes="clone")
        self.request = request
        self.defaults = defaults
        self.planner = planner
        self.form = initial_form(request, defaults, pool)
        self.plans: list[ClonePlan | str] = []  # a plan, or why there is none
        self.planned_form: CloneForm | None = None
        self._timer: Timer | None = None

    # -- layout ----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        form = self.form
        with VerticalScroll(id="dialog") as dialog:
            dialog.border_title = Content(f"Clone {self.request.title()}")
            dialog.border_subtitle = "ctrl+s starts · esc cancels"
            with Vertical(id="names"):
                for i, (vm, name) in enumerate(zip(self.request.vms, form.names, strict=True)):
                    with Horizontal(classes="field"):
                        yield Label(Content(f"{vm.name} →"), classes="field-label")
                        yield Input(name, id=f"name-{i}", classes="name", compact=True)
            with Horizontal(classes="field"):
                yield Label("pool", classes="field-label")
                yield Input(form.pool, id="pool", compact=True)
                yield Label("bandwidth", classes="field-label")
                yield Input(
                    form.bandwidth,
                    id="bandwidth",
                    placeholder="unlimited (e.g. 100M)",
                    compact=True,
                )
            with Horizontal(classes="field"):
                yield Label("transfer", classes="field-label")
                yield _choices("transfer", TRANSFERS, form.transfer)
                yield Label("compress", classes="field-label")
                yield _choices("compress", COMPRESSIONS, form.compress)
            with Horizontal(classes="field"):
                yield Label("", classes="field-label")
                yield Checkbox("start the clone", form.start, id="start", compact=True)
                yield Checkbox(
                    "preserve MAC addresses", form.preserve_mac, id="preserve-mac", compact=True
                )
            yield Label(classes="error", id="form-error")
            yield Static(Content("Plan"), classes="section-title")
            with Vertical(id="plans"):
                for i in range(len(self.request.vms)):
                    yield Static(Text("planning…", style="dim"), id=f"plan-{i}", classes="plan")
            with Horizontal(classes="buttons"):
                yield Button("Start (ctrl+s)", variant="success", id="start-clone", disabled=True)
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#name-0", Input).focus()
        self._plan_now()

    # -- the form --------------------------------------------------------------------------------

    def read_form(self) -> CloneForm:
        """The fields as they are now."""
        names = tuple(
            self.query_one(f"#name-{i}", Input).value.strip() for i in range(len(self.request.vms))
        )
        return CloneForm(
            names=names,
            pool=self.query_one("#pool", Input).value.strip(),
            bandwidth=self.query_one("#bandwidth", Input).value.strip(),
            transfer=TRANSFERS[max(0, self.query_one("#transfer", RadioSet).pressed_index)],
            compress=COMPRESSIONS[max(0, self.query_one("#compress", RadioSet).pressed_index)],
            start=self.query_one("#start", Checkbox).value,
            preserve_mac=self.query_one("#preserve-mac", Checkbox).value,
        )

    @on(Input.Changed)
    @on(RadioSet.Changed)
    @on(Checkbox.Changed)
    def _changed(self) -> None:
        form = self.read_form()
        if form == self.form:
            return  # widgets report their initial values too: nothing to plan again
        self.form = form
        self._set_ready(False)
        self._mark_stale()
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE_SECONDS, self._plan_now)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        """Enter in a field: plan now, or go to Start when the plan is ready."""
        if self.ready:
            self.query_one("#start-clone", Button).focus()
        elif self.planned_form != self.form:
            self._plan_now()

    def _plan_now(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        form = self.form
        problem = form_problem(self.request, form)
        error = self.query_one("#form-error", Label)
        error.update(Content(problem or ""))
        error.display = problem is not None
        if problem is not None:
            self.dialog_subtitle("fix the form to plan the clone")
            return
        self.dialog_subtitle("planning…")
        self._mark_stale()
        self._plan(form)

    def _mark_stale(self) -> None:
        """Grey out the plans shown: they are for the form as it was."""
        for plan in self.query(".plan").results(Static):
            plan.add_class("-stale")

    @work(exclusive=True, group="plan", exit_on_error=False)
    async def _plan(self, form: CloneForm) -> None:
        options = clone_options(self.defaults, form)
        results = await asyncio.gather(
            *(self._plan_one(vm.name, o) for vm, o in zip(self.request.vms, options, strict=True))
        )
        if form != self.form:
            return  # the form changed meanwhile; its own plan is on the way
        self.plans = list(results)
        self.planned_form = form
        for i, result in enumerate(results):
            target = self.query_one(f"#plan-{i}", Static)
            target.remove_class("-stale")
            if isinstance(result, str):
                target.update(plan_failure(self.request.vms[i].name, result))
            else:
                target.update(plan_renderable(result))
        self._set_ready(self.ready)

    async def _plan_one(self, vm: str, options: CloneOptions) -> ClonePlan | str:
        try:
            return await self.planner(vm, options)
        except Exception as exc:  # unreachable host, VM gone, bad name: shown, never raised
            return str(exc) or type(exc).__name__

    # -- starting --------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True when every plan is for the current form and free of conflicts."""
        return (
            self.planned_form == self.form
            and bool(self.plans)
            and all(not isinstance(p, str) and p.ok for p in self.plans)
        )

    def _set_ready(self, ready: bool) -> None:
        self.query_one("#start-clone", Button).disabled = not ready
        if ready:
            self.dialog_subtitle("ctrl+s starts · esc cancels")
        elif self.planned_form == self.form and self.plans:
            self.dialog_subtitle("refused: see the plan · esc cancels")

    def dialog_subtitle(self, text: str) -> None:
        """What the dialog is doing, in its bottom border."""
        self.query_one("#dialog").border_subtitle = text

    def action_start(self) -> None:
        """Start the clones (refused while planning, or when a plan has conflicts)."""
        if not self.ready:
            self.app.bell()
            return
        self.dismiss([p for p in self.plans if not isinstance(p, str)])

    @on(Button.Pressed, "#start-clone")
    def _start_pressed(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.dismiss(None)


def _choices(name: str, values: tuple[str, ...], current: str) -> RadioSet:
    buttons = [RadioButton(v, v == current, id=f"{name}-{v}", compact=True) for v in values]
    return RadioSet(*buttons, id=name, compact=True)
