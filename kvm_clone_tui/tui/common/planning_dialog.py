"""The base of the clone and sync dialogs: a form planned again after each pause in typing.

Every change of the form marks the plan shown stale and (re)starts one exclusive worker, which
waits :data:`DEBOUNCE_SECONDS` and then plans the form as it is: a change meanwhile cancels
it and starts the next, as Textual's worker guide debounces. A plan is shown only while it is
for the form as it is; the dialog is :attr:`PlanningDialog.ready` when that plan says yes.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from typing import ClassVar, Generic, TypeVar

from textual import on, work
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, RadioSet

DEBOUNCE_SECONDS = 0.4

FormT = TypeVar("FormT")
PlannedT = TypeVar("PlannedT")
ResultT = TypeVar("ResultT")


class PlanningDialog(ModalScreen[ResultT], Generic[FormT, PlannedT, ResultT]):
    """A modal form whose plan (``PlannedT``: plans, or why there are none) follows it.

    Subclasses compose the form (a ``#dialog`` container, a ``.error`` label, ``.plan``
    statics, the :attr:`START_BUTTON`) and say how to read, check, plan and show it.
    """

    START_BUTTON: ClassVar[str] = "#start"
    READY_SUBTITLE: ClassVar[str] = "ctrl+s starts · esc cancels"
    PROBLEM_SUBTITLE: ClassVar[str] = "fix the form to plan it"

    def __init__(self, form: FormT, *, classes: str | None = None) -> None:
        super().__init__(classes=classes)
        self.form: FormT = form
        self.planned_form: FormT | None = None
        self._debouncing = False  # a change waits for the pause to end

    # -- what a dialog says ----------------------------------------------------------------------

    @abstractmethod
    def read_form(self) -> FormT:
        """The fields as they are now."""

    @abstractmethod
    def form_problem(self, form: FormT) -> str | None:
        """Why ``form`` cannot be planned as it is (None: it can)."""

    def can_plan(self) -> bool:
        """False when this dialog has nothing to plan with (it then says so itself)."""
        return True

    @abstractmethod
    async def make_plan(self, form: FormT) -> PlannedT:
        """The plan of ``form`` (failures to plan are returned, never raised)."""

    @abstractmethod
    def show_plan(self, form: FormT, planned: PlannedT) -> None:
        """Keep and show the plan of ``form`` (the form as it is)."""

    @property
    @abstractmethod
    def has_plan(self) -> bool:
        """True when a plan (or why there is none) is kept."""

    @abstractmethod
    def plan_ok(self) -> bool:
        """True when the kept plan says yes."""

    def form_changed(self) -> None:
        """The form changed (before it is planned again)."""

    def plan_shown(self, form: FormT) -> None:
        """The plan of ``form`` is shown and the start button follows it."""

    # -- planning --------------------------------------------------------------------------------

    @on(Input.Changed)
    @on(RadioSet.Changed)
    @on(Checkbox.Changed)
    def _changed(self) -> None:
        form = self.read_form()
        if form == self.form:
            return  # widgets report their initial values too: nothing to plan again
        self.form = form
        self.form_changed()
        self._set_ready(False)
        self.mark_stale()
        self._debouncing = True
        self._plan(form, DEBOUNCE_SECONDS)

    @property
    def debouncing(self) -> bool:
        """True while a change waits for the pause in typing to end."""
        return self._debouncing

    def plan_now(self) -> None:
        """Plan the form as it is, without waiting for a pause."""
        self._debouncing = False
        self.workers.cancel_group(self, "plan")
        if self._prepare(self.form):
            self._plan(self.form, 0.0)

    def _prepare(self, form: FormT) -> bool:
        """Show the form's problem, if any; True when it is to be planned."""
        problem = self.form_problem(form)
        self.show_problem(problem)
        if problem is not None:
            self.dialog_subtitle(self.PROBLEM_SUBTITLE)
            return False
        if not self.can_plan():
            return False
        self.dialog_subtitle("planning…")
        self.mark_stale()
        return True

    @work(exclusive=True, group="plan", exit_on_error=False)
    async def _plan(self, form: FormT, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)  # a change meanwhile cancels this worker
            self._debouncing = False
            if not self._prepare(form):
                return
        planned = await self.make_plan(form)
        if form != self.form:
            return  # the form changed meanwhile; its own plan is on the way
        self.planned_form = form
        self.show_plan(form, planned)
        self._set_ready(self.ready)
        self.plan_shown(form)

    # -- showing ---------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True when the plan kept is for the form as it is and says yes."""
        return self.planned_form == self.form and self.has_plan and self.plan_ok()

    def _set_ready(self, ready: bool) -> None:
        self.query_one(self.START_BUTTON, Button).disabled = not ready
        if ready:
            self.dialog_subtitle(self.READY_SUBTITLE)
        elif self.planned_form == self.form and self.has_plan:
            self.dialog_subtitle("refused: see the plan · esc cancels")

    def mark_stale(self) -> None:
        """Grey out the plans shown: they are for the form as it was."""
        for plan in self.query(".plan"):
            plan.add_class("-stale")

    def show_problem(self, problem: str | None) -> None:
        """Say why the form cannot be planned (None: hide it)."""
        error = self.query_one(".error", Label)
        error.update(Content(problem or ""))
        error.display = problem is not None

    def dialog_subtitle(self, text: str) -> None:
        """What the dialog is doing, in its bottom border."""
        self.query_one("#dialog").border_subtitle = text
