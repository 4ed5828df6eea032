"""The clone dialog's form, checked and turned into CloneOptions (no UI, no hosts)."""

from __future__ import annotations

import dataclasses
from typing import Any

from kvm_clone_tui.api.options import CloneOptions
from kvm_clone_tui.tui.clone.setup import (
    CloneForm,
    CloneRequest,
    bandwidth_text,
    clone_options,
    form_problem,
    initial_form,
)
from kvm_clone_tui.tui.common.destination import vm_names
from tests.tui.fake_source import alpha_vms

VMS = {vm.name: vm for vm in alpha_vms()}


def request(dest: str, *names: str) -> CloneRequest:
    return CloneRequest("alpha", dest, tuple(VMS[n] for n in names))


def test_defaults_keep_the_name_elsewhere_and_add_clone_on_the_same_host() -> None:
    defaults = CloneOptions(start=True, bandwidth_limit=100 << 20, transfer="relay")
    form = initial_form(request("beta", "web01", "db01"), defaults, "default")
    assert form.names == ("web01", "db01")
    assert (form.pool, form.bandwidth, form.transfer, form.start) == (
        "default",
        "100M",
        "relay",
        True,
    )
    assert initial_form(request("alpha", "web01"), defaults, "x").names == ("web01-clone",)
    assert request("beta", "web01").title() == "web01 from alpha to beta"
    assert request("alpha", "web01", "db01").title() == "2 VMs within alpha"


def test_problems_are_found_before_planning() -> None:
    form = initial_form(request("beta", "web01", "db01"), CloneOptions(), "default")
    assert form_problem(request("beta", "web01", "db01"), form) is None

    def problem(dest: str = "beta", **changes: Any) -> str | None:
        return form_problem(request(dest, "web01", "db01"), dataclasses.replace(form, **changes))

    assert problem(names=("web01", "")) == "type a name for every clone"
    assert "VM name" in (problem(names=("a/b", "db01")) or "")
    assert problem(names=("x", "x")) == "two clones cannot both be named 'x'"
    assert problem("alpha") == "a copy on alpha needs a new name (web01 is taken)"
    assert problem(pool="") == "type a storage pool"
    assert "pool name" in (problem(pool="-p") or "")
    assert (problem(bandwidth="fast") or "").startswith("bandwidth limit must be")


def test_options_per_vm() -> None:
    form = CloneForm(("a", "b"), "small", "2M", "relay", "off", True, True)
    first, second = clone_options(CloneOptions(parallel=4), form)
    assert (first.new_name, second.new_name) == ("a", "b")
    assert first.bandwidth_limit == 2 << 20 and first.parallel == 4  # the rest stays
    assert (first.pool, first.transfer, first.compress) == ("small", "relay", "off")
    assert first.start and first.preserve_mac
    unlimited = clone_options(
        CloneOptions(bandwidth_limit=5), dataclasses.replace(form, bandwidth="")
    )
    assert unlimited[0].bandwidth_limit is None


def test_small_formatters() -> None:
    assert [bandwidth_text(v) for v in (None, 1 << 30, 3 << 20, 512 << 10, 1000)] == [
        "",
        "1G",
        "3M",
        "512K",
        "1000",
    ]
    assert vm_names([VMS["web01"]]) == "web01"
    assert vm_names(list(VMS.values())[:4]) == "app.v2, db01 +2"
