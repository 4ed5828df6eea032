"""Can the source VM's CPU run on the destination? Decided before a byte is copied.

The decision (:func:`decide`) is pure: it reads the VM's ``<cpu>`` and what libvirt says on
each host (host CPU from the capabilities, the hypervisor's CPU modes and models from the
domain capabilities of the VM's domain type, arch and machine, and ``compareHypervisorCPU``
for a named model), so it is unit-tested with real libvirt documents. :func:`read_view` is what
each host's libvirt says (``Host.cpu_view``, in the libvirt thread pool); the clone's facts
hold both views and its rules decide (``plan_facts.py``, ``plan_rules.py``).

The domain type matters: under ``kvm`` a named model needs the host CPU's features, under
``qemu`` (TCG) it needs what QEMU can emulate; ``host-passthrough`` exists only under KVM.

- no ``<cpu>`` model: nothing to check (QEMU's default model);
- ``host-model``, ``host-passthrough``, ``maximum``: refused when the destination's hypervisor
  does not offer the mode; ``host-passthrough`` (and ``maximum`` under KVM) between host CPUs
  that differ is a warning (the guest sees the destination's CPU);
- a named model (``custom``): refused when the destination cannot provide the model or a
  required feature (libvirt checks it at start: the clone would not start), or the model or a
  feature is unknown there. With ``check='none'`` libvirt does not check and QEMU starts the
  VM without the features: a warning, only for features the source does provide (a ``qemu64``
  guest under KVM lacks ``svm`` on every Intel host, and runs).
- a machine type the destination's QEMU does not have is refused.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import libvirt

# Errors that mean libvirtd is gone: left to LibvirtConnection.call, which reconnects.
_LOST = frozenset(
    {
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INVALID_CONN,
    }
)
_MISSING = re.compile(r"does not provide required features: ([^;]+)")
_FORBIDDEN = re.compile(r"provides forbidden features: ([^;]+)")
_MODES = ("host-model", "host-passthrough", "maximum")


@dataclass(frozen=True)
class GuestCpu:
    """The CPU a domain definition asks for."""

    virttype: str  # the domain type: kvm | qemu | ...
    arch: str | None
    machine: str | None
    mode: str  # none | custom | host-model | host-passthrough | maximum
    check: str | None = None  # none | partial | full
    model: str | None = None
    features: tuple[tuple[str, str], ...] = ()  # (name, policy)
    xml: str | None = None  # the <cpu> element, for compareHypervisorCPU


@dataclass(frozen=True)
class HostCpu:
    """A host's own CPU (``<capabilities><host><cpu>``)."""

    arch: str | None
    vendor: str | None
    model: str | None
    features: frozenset[str] = frozenset()

    @property
    def label(self) -> str:
        """E.g. ``AMD EPYC-Rome``."""
        return " ".join(p for p in (self.vendor, self.model) if p) or "an unknown CPU"


@dataclass(frozen=True)
class HypervisorCpu:
    """What the hypervisor offers a domain (``<domainCapabilities><cpu>``)."""

    modes: dict[str, bool] = field(default_factory=dict)  # mode -> supported
    host_model: str | None = None  # the model host-model resolves to
    models: dict[str, bool] = field(default_factory=dict)  # named model -> usable


@dataclass(frozen=True)
class Comparison:
    """``compareHypervisorCPU`` of the guest's named model on one host."""

    compatible: bool
    missing: tuple[str, ...] = ()  # required features the host cannot provide
    forbidden: tuple[str, ...] = ()  # forbidden features the host provides
    error: str | None = None  # libvirt refused to compare (unknown model or feature...)


@dataclass(frozen=True)
class HostView:
    """What one host's libvirt says about running the guest's CPU."""

    name: str
    host: HostCpu | None = None
    hypervisor: HypervisorCpu | None = None
    virttype_error: str | None = None  # the domain type is not available at all
    machine_error: str | None = None  # the machine type is not available
    comparison: Comparison | None = None  # custom mode only


@dataclass(frozen=True)
class CpuVerdict:
    """Conflicts (refuse) and warnings for the plan."""

    conflicts: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


# --- parsing -------------------------------------------------------------------------------


def guest_cpu(domain_xml: str) -> GuestCpu:
    """The CPU of a domain definition (the source's inactive XML)."""
    root = ET.fromstring(domain_xml)
    os_type = root.find("os/type")
    arch = os_type.get("arch") if os_type is not None else None
    machine = os_type.get("machine") if os_type is not None else None
    virttype = root.get("type", "kvm")
    cpu = root.find("cpu")
    if cpu is None:
        return GuestCpu(virttype, arch, machine, "none")
    mode = cpu.get("mode", "custom")
    model_element = cpu.find("model")
    model = (model_element.text or "").strip() if model_element is not None else ""
    features = tuple(
        (f.get("name", ""), f.get("policy", "require")) for f in cpu.findall("feature")
    )
    if mode == "custom" and not model:
        mode = "none"  # topology, NUMA or cache only: QEMU's default model
    return GuestCpu(
        virttype=virttype,
        arch=arch,
        machine=machine,
        mode=mode,
        check=cpu.get("check"),
        model=model or None,
        features=features,
        xml=ET.tostring(cpu, encoding="unicode"),
    )


def host_cpu(capabilities_xml: str) -> HostCpu:
    """A host's CPU from ``virConnectGetCapabilities``."""
    cpu = ET.fromstring(capabilities_xml).find("host/cpu")
    if cpu is None:
        return HostCpu(None, None, None)
    return HostCpu(
        arch=cpu.findtext("arch"),
        vendor=cpu.findtext("vendor"),
        model=cpu.findtext("model"),
        features=frozenset(f.get("name", "") for f in cpu.findall("feature")),
    )


def hypervisor_cpu(domcaps_xml: str) -> HypervisorCpu:
    """The CPU modes and models from ``virConnectGetDomainCapabilities``."""
    cpu = ET.fromstring(domcaps_xml).find("cpu")
    modes: dict[str, bool] = {}
    models: dict[str, bool] = {}
    host_model = None
    for mode in cpu.findall("mode") if cpu is not None else []:
        name = mode.get("name", "")
        modes[name] = mode.get("supported") == "yes"
        if name == "host-model":
            host_model = mode.findtext("model")
        if name == "custom":
            for model in mode.findall("model"):
                models[(model.text or "").strip()] = model.get("usable") != "no"
    return HypervisorCpu(modes, host_model, models)


def comparison_from_error(message: str) -> Comparison:
    """Read libvirt's error of a failed ``compareHypervisorCPU`` (FAIL_INCOMPATIBLE)."""

    def names(pattern: re.Pattern[str]) -> tuple[str, ...]:
        found = pattern.search(message)
        return tuple(n.strip() for n in found.group(1).split(",") if n.strip()) if found else ()

    missing, forbidden = names(_MISSING), names(_FORBIDDEN)
    if missing or forbidden or "incompatible" in message:
        return Comparison(False, missing, forbidden)
    return Comparison(False, error=message)


# --- the decision --------------------------------------------------------------------------


def _under(virttype: str) -> str:
    return {"kvm": "KVM", "qemu": "QEMU emulation (TCG, domain type qemu)"}.get(
        virttype, f"domain type {virttype}"
    )


def _fix(vm: str, dest: HostView) -> str:
    offered = dest.hypervisor.modes if dest.hypervisor else {}
    choices = [f"<cpu mode='{m}'/>" for m in ("host-model", "maximum") if offered.get(m)]
    model = dest.hypervisor.host_model if dest.hypervisor else None
    if dest.hypervisor and model and dest.hypervisor.models.get(model, False):
        choices.append(
            f"<cpu mode='custom'><model>{model}</model></cpu> (a model the destination offers)"
        )
    how = " or ".join(choices) if choices else "a CPU the destination offers"
    return f"change the VM's CPU on the source (virsh edit {vm}: {how}) and plan again"


def decide(guest: GuestCpu, vm: str, source: HostView, dest: HostView) -> CpuVerdict:
    """Conflicts and warnings for running ``guest`` on ``dest`` as it runs on ``source``."""
    if dest.virttype_error is not None:
        return CpuVerdict()  # no such domain type there: the plan's host check warns about it
    under = _under(guest.virttype)
    if dest.machine_error is not None:
        return CpuVerdict(
            conflicts=(
                f"the destination's QEMU has no machine type {guest.machine!r} "
                f"({dest.machine_error}); change the VM's machine type (virsh edit {vm}, "
                "<os><type machine=...>) to one both hosts have, e.g. 'pc' or 'q35'",
            )
        )
    if guest.mode == "none":
        return CpuVerdict()
    if guest.mode in _MODES:
        return _decide_mode(guest, vm, source, dest, under)
    if guest.mode != "custom":
        return CpuVerdict(
            warnings=(f"cpu: the mode {guest.mode!r} is unknown to kvm-clone; not checked",)
        )
    return _decide_custom(guest, vm, source, dest, under)


def _decide_mode(
    guest: GuestCpu, vm: str, source: HostView, dest: HostView, under: str
) -> CpuVerdict:
    offered = dest.hypervisor.modes if dest.hypervisor else {}
    if offered and not offered.get(guest.mode, False):
        return CpuVerdict(
            conflicts=(
                f"the VM's CPU mode {guest.mode} is not available under {under} on "
                f"{dest.name}; {_fix(vm, dest)}",
            )
        )
    host_bound = guest.mode == "host-passthrough" or (
        guest.mode == "maximum" and guest.virttype == "kvm"
    )
    if not host_bound or source.host is None or dest.host is None:
        return CpuVerdict()
    if (source.host.vendor, source.host.model, source.host.features) == (
        dest.host.vendor,
        dest.host.model,
        dest.host.features,
    ):
        return CpuVerdict()
    lacking = sorted(source.host.features - dest.host.features)
    detail = f"; {dest.name} lacks {', '.join(lacking)}" if lacking else ""
    return CpuVerdict(
        warnings=(
            f"cpu: {guest.mode} shows the guest the host's own CPU, and the hosts' CPUs differ: "
            f"{source.name} has {source.host.label}, {dest.name} {dest.host.label}{detail}; "
            "a guest relying on what it saw on the source may misbehave (host-model or a "
            "named model give the same CPU on both)",
        )
    )


def _decide_custom(
    guest: GuestCpu, vm: str, source: HostView, dest: HostView, under: str
) -> CpuVerdict:
    cpu = guest.model or "?"
    required = [n for n, p in guest.features if p in ("require", "force")]
    if required:
        cpu += " +" + " +".join(required)
    comparison = dest.comparison
    if comparison is None or comparison.compatible:
        return CpuVerdict()
    if comparison.error is not None:
        return CpuVerdict(
            conflicts=(
                f"the VM's CPU ({cpu}) cannot be given under {under} on {dest.name}: "
                f"{comparison.error}; {_fix(vm, dest)}",
            )
        )
    missing, forbidden = list(comparison.missing), list(comparison.forbidden)
    before = source.comparison
    same_on_source = before is not None and not before.compatible and before.error is None
    if guest.check == "none" and same_on_source:
        assert before is not None
        missing = [f for f in missing if f not in before.missing]
        forbidden = [f for f in forbidden if f not in before.forbidden]
        if not missing and not forbidden:
            return CpuVerdict()  # as on the source: QEMU starts it without them there too
    parts = []
    if missing:
        parts.append(f"it lacks {', '.join(missing)}")
    if forbidden:
        parts.append(f"it has the forbidden {', '.join(forbidden)}")
    what = f"the VM's CPU ({cpu}) cannot be given under {under} on {dest.name}: " + "; ".join(parts)
    if guest.check == "none":
        return CpuVerdict(
            warnings=(
                f"cpu: {what}; the VM's <cpu check='none'> lets QEMU start it anyway, "
                "without those features",
            )
        )
    also = ""
    if missing and any(n in missing for n in required):
        also = " (or drop the <feature policy='require'> of what is missing)"
    if same_on_source:
        what += f" ({source.name} cannot give it either: the VM cannot start there as it is)"
    return CpuVerdict(
        conflicts=(f"{what}; libvirt would refuse to start the clone; {_fix(vm, dest)}{also}",)
    )


# --- asking the hosts ----------------------------------------------------------------------


def _message(exc: libvirt.libvirtError) -> str:
    return str(exc.get_error_message() or exc).removeprefix("internal error: ")


def read_view(conn: libvirt.virConnect, host_name: str, guest: GuestCpu) -> HostView:
    """One host's view (runs in the libvirt thread pool: ``Host.cpu_view``)."""
    caps = host_cpu(conn.getCapabilities())
    try:
        conn.getDomainCapabilities(None, guest.arch, None, guest.virttype, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in _LOST:
            raise
        return HostView(host_name, caps, virttype_error=_message(exc))
    try:
        domcaps = conn.getDomainCapabilities(None, guest.arch, guest.machine, guest.virttype, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in _LOST:
            raise
        return HostView(host_name, caps, machine_error=_message(exc))
    comparison = None
    if guest.mode == "custom" and guest.xml is not None:
        try:
            result = conn.compareHypervisorCPU(
                None,
                guest.arch,
                guest.machine,
                guest.virttype,
                guest.xml,
                libvirt.VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE,
            )
            comparison = Comparison(result != libvirt.VIR_CPU_COMPARE_INCOMPATIBLE)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in _LOST:
                raise
            comparison = comparison_from_error(_message(exc))
    return HostView(host_name, caps, hypervisor_cpu(domcaps), comparison=comparison)
