"""The clone dialog: new names, pool and options, and the engine's plan for each VM, live.

Every change of the form is planned again after a pause in typing (:class:`PlanningDialog`,
``client.plan_clone`` for each VM); Start stays disabled until every plan is current and free
of conflicts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
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
from kvm_clone_tui.tui.common.planning_dialog import PlanningDialog
from kvm_clone_tui.tui.plan_text import plan_failure, plan_renderable

#: Plans one VM: (VM name, options) -> the engine's plan.
Planner = Callable[[str, CloneOptions], Awaitable[ClonePlan]]
#: Each VM's plan, or why there is none.
Plans = list[ClonePlan | str]


class CloneDialog(PlanningDialog[CloneForm, Plans, list[ClonePlan] | None]):
    """Dismisses with the plans to run (all free of conflicts), or None when cancelled."""

    START_BUTTON = "#start-clone"
    READY_SUBTITLE = "ctrl+s starts · esc cancels"
    PROBLEM_SUBTITLE = "fix the form to plan the clone"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "start", "Start the clone"),
        Binding("escape", "dismiss(None)", "Cancel"),
    ]

    def __init__(
        self, request: CloneRequest, defaults: CloneOptions, pool: str, planner: Planner
    ) -> None:
        super().__init__(initial_form(request, defaults, pool), classes="clone")
        self.request = request
        self.defaults = defaults
        self.planner = planner
        self.plans: Plans = []  # a plan, or why there is none

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
        self.plan_now()

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

    def form_problem(self, form: CloneForm) -> str | None:
        """Why the form cannot be planned (a name, the pool, the bandwidth)."""
        return form_problem(self.request, form)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        """Enter in a field: plan now, or go to Start when the plan is ready."""
        if self.ready:
            self.query_one("#start-clone", Button).focus()
        elif self.planned_form != self.form:
            self.plan_now()

    async def make_plan(self, form: CloneForm) -> Plans:
        """Every VM's plan, side by side."""
        options = clone_options(self.defaults, form)
        return list(
            await asyncio.gather(
                *(
                    self._plan_one(vm.name, o)
                    for vm, o in zip(self.request.vms, options, strict=True)
                )
            )
        )

    async def _plan_one(self, vm: str, options: CloneOptions) -> ClonePlan | str:
        try:
            return await self.planner(vm, options)
        except Exception as exc:  # unreachable host, VM gone, bad name: shown, never raised
            return str(exc) or type(exc).__name__

    def show_plan(self, form: CloneForm, planned: Plans) -> None:
        """Each VM's plan under the form."""
        self.plans = planned
        for i, result in enumerate(planned):
            target = self.query_one(f"#plan-{i}", Static)
            target.remove_class("-stale")
            if isinstance(result, str):
                target.update(plan_failure(self.request.vms[i].name, result))
            else:
                target.update(plan_renderable(result))

    # -- starting --------------------------------------------------------------------------------

    @property
    def has_plan(self) -> bool:
        """True once the VMs were planned."""
        return bool(self.plans)

    def plan_ok(self) -> bool:
        """True when every VM's plan is free of conflicts."""
        return all(not isinstance(p, str) and p.ok for p in self.plans)

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
