"""What a clone dialog works on and how its form becomes ``CloneOptions`` (no widgets here)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from kvm_clone_tui.api.config import parse_bandwidth
from kvm_clone_tui.api.models import VM
from kvm_clone_tui.api.options import CloneOptions, CompressChoice, TransferChoice
from kvm_clone_tui.api.validation import (
    ValidationError,
    validate_pool_name,
    validate_vm_name,
)

TRANSFERS: tuple[TransferChoice, ...] = ("auto", "direct", "relay")
COMPRESSIONS: tuple[CompressChoice, ...] = ("auto", "on", "off")


@dataclass(frozen=True)
class CloneRequest:
    """Clone ``vms`` of host ``source`` to host ``dest`` (the same host makes copies)."""

    source: str
    dest: str
    vms: tuple[VM, ...]

    @property
    def same_host(self) -> bool:
        """True when the copies stay on the source host (they need other names)."""
        return self.source == self.dest

    def default_name(self, vm: VM) -> str:
        """The new name offered: the same name, or ``<name>-clone`` on the same host."""
        return f"{vm.name}-clone" if self.same_host else vm.name

    def title(self) -> str:
        """``web01 from alpha to beta``, ``3 VMs from alpha to beta``."""
        what = self.vms[0].name if len(self.vms) == 1 else f"{len(self.vms)} VMs"
        where = f"within {self.source}" if self.same_host else f"from {self.source} to {self.dest}"
        return f"{what} {where}"


@dataclass(frozen=True)
class CloneForm:
    """The dialog's fields as typed (text, choices, checkboxes)."""

    names: tuple[str, ...]
    pool: str
    bandwidth: str
    transfer: TransferChoice
    compress: CompressChoice
    start: bool
    preserve_mac: bool


def bandwidth_text(limit: int | None) -> str:
    """A bandwidth in bytes per second as the form shows it (``2M``; empty: unlimited)."""
    if limit is None:
        return ""
    for suffix, unit in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if limit % unit == 0:
            return f"{limit // unit}{suffix}"
    return str(limit)


def initial_form(request: CloneRequest, defaults: CloneOptions, pool: str) -> CloneForm:
    """The form prefilled from the configuration's clone defaults."""
    return CloneForm(
        names=tuple(request.default_name(vm) for vm in request.vms),
        pool=pool,
        bandwidth=bandwidth_text(defaults.bandwidth_limit),
        transfer=defaults.transfer,
        compress=defaults.compress,
        start=defaults.start,
        preserve_mac=defaults.preserve_mac,
    )


def form_problem(request: CloneRequest, form: CloneForm) -> str | None:
    """Why the form cannot be planned as it is (None: it can)."""
    for name in form.names:
        if not name:
            return "type a name for every clone"
        try:
            validate_vm_name(name)
        except ValidationError as exc:
            return str(exc)
    twice = sorted({n for n in form.names if form.names.count(n) > 1})
    if twice:
        return f"two clones cannot both be named {twice[0]!r}"
    if request.same_host:
        same = [vm.name for vm, n in zip(request.vms, form.names, strict=True) if vm.name == n]
        if same:
            return f"a copy on {request.source} needs a new name ({same[0]} is taken)"
    if not form.pool:
        return "type a storage pool"
    try:
        validate_pool_name(form.pool)
    except ValidationError as exc:
        return str(exc)
    if form.bandwidth:
        try:
            parse_bandwidth(form.bandwidth)
        except ValueError as exc:
            return f"bandwidth limit {exc}"
    return None


def clone_options(defaults: CloneOptions, form: CloneForm) -> list[CloneOptions]:
    """One CloneOptions per VM (call only when :func:`form_problem` found nothing)."""
    shared = replace(
        defaults,
        pool=form.pool,
        bandwidth_limit=parse_bandwidth(form.bandwidth) if form.bandwidth else None,
        transfer=form.transfer,
        compress=form.compress,
        start=form.start,
        preserve_mac=form.preserve_mac,
    )
    return [replace(shared, new_name=name) for name in form.names]
