"""The CPU compatibility decision, on real libvirt documents and libvirt's own error messages.

``capabilities-amd.xml``, ``domcaps-qemu.xml`` and ``domcaps-kvm.xml`` are what libvirt 9.0
answered on a lab host of this machine (``virsh capabilities``, ``virsh domcapabilities
--virttype qemu|kvm --machine pc-i440fx-7.2``); the domain XML is the lab's ``db01``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kvm_clone_tui.engine.cpu_compat import (
    Comparison,
    GuestCpu,
    HostView,
    comparison_from_error,
    decide,
    guest_cpu,
    host_cpu,
    hypervisor_cpu,
)

DATA = Path(__file__).parent / "data"
CAPS = (DATA / "cpu" / "capabilities-amd.xml").read_text()
DOMCAPS_QEMU = (DATA / "cpu" / "domcaps-qemu.xml").read_text()
DOMCAPS_KVM = (DATA / "cpu" / "domcaps-kvm.xml").read_text()
DB01 = (DATA / "db01.xml").read_text()
# libvirt 9.0's compareHypervisorCPU(..., FAIL_INCOMPATIBLE) errors, as seen on the lab.
SKYLAKE_UNDER_TCG = (
    "the CPU is incompatible with host CPU: Host CPU does not provide required features: "
    "vme, pcid, x2apic, tsc-deadline, hle, invpcid, rtm, avx512f, avx512dq, rdseed, avx512cd, "
    "avx512bw, avx512vl, xsavec, 3dnowprefetch"
)
QEMU64_UNDER_KVM = (
    "the CPU is incompatible with host CPU: Host CPU does not provide required features: pni, svm"
)
UNKNOWN_FEATURE = "Unknown CPU feature nosuchfeature"


def with_cpu(cpu: str, domain_type: str = "qemu") -> str:
    """db01 with another <cpu> element (or none) and domain type."""
    start, end = DB01.index("<cpu"), DB01.index("</cpu>") + len("</cpu>")
    xml = DB01[:start] + cpu + DB01[end:]
    return xml.replace("<domain type='qemu'>", f"<domain type='{domain_type}'>", 1)


def view(name: str, domcaps: str = DOMCAPS_QEMU, caps: str = CAPS, **kw: object) -> HostView:
    return HostView(name, host_cpu(caps), hypervisor_cpu(domcaps), **kw)  # type: ignore[arg-type]


def other_host_caps() -> str:
    """The same capabilities with another CPU model and without avx512f."""
    return CAPS.replace("<model>kvm64</model>", "<model>Skylake-Client</model>", 1).replace(
        "<feature name='avx512f'/>", "", 1
    )


# --- parsing -------------------------------------------------------------------------------


def test_guest_cpu_reads_mode_model_features_and_where_it_runs() -> None:
    guest = guest_cpu(DB01)
    assert (guest.virttype, guest.arch, guest.mode, guest.model, guest.check) == (
        "qemu",
        "x86_64",
        "custom",
        "qemu64",
        "none",
    )
    assert guest.machine and guest.machine.startswith("pc-")
    assert guest.xml and guest.xml.startswith("<cpu")
    custom = guest_cpu(
        with_cpu(
            "<cpu match='exact'><model>Skylake-Server</model>"
            "<feature policy='require' name='avx512f'/><feature policy='disable' name='vme'/></cpu>"
        )
    )
    assert custom.mode == "custom" and custom.check is None
    assert custom.features == (("avx512f", "require"), ("vme", "disable"))
    assert guest_cpu(with_cpu("")).mode == "none"
    assert guest_cpu(with_cpu("<cpu><topology sockets='1' cores='2' threads='1'/></cpu>")).mode == (
        "none"
    )
    assert guest_cpu(with_cpu("<cpu mode='host-passthrough'/>", "kvm")).mode == "host-passthrough"


def test_domain_capabilities_say_which_modes_and_models_the_hypervisor_offers() -> None:
    tcg, kvm = hypervisor_cpu(DOMCAPS_QEMU), hypervisor_cpu(DOMCAPS_KVM)
    assert tcg.modes["host-passthrough"] is False and kvm.modes["host-passthrough"] is True
    assert tcg.modes["host-model"] and tcg.modes["maximum"] and tcg.modes["custom"]
    assert tcg.host_model == "EPYC"
    assert tcg.models["qemu64"] is True and tcg.models["Skylake-Server"] is False


def test_host_cpu_from_capabilities() -> None:
    cpu = host_cpu(CAPS)
    assert (cpu.arch, cpu.vendor, cpu.model) == ("x86_64", "AMD", "kvm64")
    assert {"avx512f", "aes", "sse4.2"} <= cpu.features
    assert cpu.label == "AMD kvm64"


def test_libvirt_compare_errors_are_read() -> None:
    skylake = comparison_from_error(SKYLAKE_UNDER_TCG)
    assert not skylake.compatible and skylake.error is None
    assert skylake.missing[0] == "vme" and "avx512f" in skylake.missing
    assert len(skylake.missing) == 15
    forbidden = comparison_from_error(
        "the CPU is incompatible with host CPU: Host CPU provides forbidden features: svm"
    )
    assert forbidden.forbidden == ("svm",) and forbidden.missing == ()
    unknown = comparison_from_error(UNKNOWN_FEATURE)
    assert unknown.error == UNKNOWN_FEATURE and not unknown.compatible


# --- the decision --------------------------------------------------------------------------

SKYLAKE = "<cpu mode='custom' match='exact' check='partial'><model>Skylake-Server</model></cpu>"


def test_a_model_both_hosts_give_passes() -> None:
    guest = guest_cpu(DB01)
    ok = Comparison(True)
    assert decide(guest, "db01", view("a", comparison=ok), view("b", comparison=ok)) == (
        decide(guest, "db01", view("a"), view("b"))
    )
    verdict = decide(guest, "db01", view("a", comparison=ok), view("b", comparison=ok))
    assert verdict.conflicts == () and verdict.warnings == ()


def test_a_recent_model_under_tcg_is_refused_with_the_missing_features_and_the_fix() -> None:
    guest = guest_cpu(with_cpu(SKYLAKE))
    lacking = comparison_from_error(SKYLAKE_UNDER_TCG)
    verdict = decide(
        guest, "db01", view("alpha", comparison=Comparison(True)), view("beta", comparison=lacking)
    )
    [conflict] = verdict.conflicts
    assert "Skylake-Server" in conflict and "TCG" in conflict and "on beta" in conflict
    assert "avx512f" in conflict and "3dnowprefetch" in conflict
    assert "virsh edit db01" in conflict and "<cpu mode='host-model'/>" in conflict
    assert "cannot give it either" not in conflict
    # The source cannot give it either (same QEMU): still refused, and said so.
    both = decide(
        guest, "db01", view("alpha", comparison=lacking), view("beta", comparison=lacking)
    )
    assert "alpha cannot give it either" in both.conflicts[0]


def test_required_feature_missing_suggests_dropping_it() -> None:
    guest = guest_cpu(
        with_cpu(
            "<cpu mode='custom' match='exact' check='full'><model>qemu64</model>"
            "<feature policy='require' name='avx512f'/></cpu>"
        )
    )
    lacking = comparison_from_error(
        "the CPU is incompatible with host CPU: Host CPU does not provide required features: "
        "avx512f"
    )
    [conflict] = decide(guest, "db01", view("a"), view("b", comparison=lacking)).conflicts
    assert "qemu64 +avx512f" in conflict and "policy='require'" in conflict


def test_unknown_feature_is_refused() -> None:
    guest = guest_cpu(
        with_cpu(
            "<cpu mode='custom' match='exact' check='none'><model>qemu64</model>"
            "<feature policy='require' name='nosuchfeature'/></cpu>"
        )
    )
    unknown = comparison_from_error(UNKNOWN_FEATURE)
    [conflict] = decide(
        guest, "db01", view("a", comparison=unknown), view("b", comparison=unknown)
    ).conflicts
    assert "nosuchfeature" in conflict and "virsh edit db01" in conflict


def test_check_none_warns_only_about_features_the_source_gives() -> None:
    guest = guest_cpu(with_cpu(DB01[DB01.index("<cpu") : DB01.index("</cpu>") + 6], "kvm"))
    assert guest.check == "none"
    as_on_source = comparison_from_error(QEMU64_UNDER_KVM)
    same = decide(
        guest,
        "db01",
        view("a", DOMCAPS_KVM, comparison=as_on_source),
        view("b", DOMCAPS_KVM, comparison=as_on_source),
    )
    assert same.conflicts == () and same.warnings == ()
    worse = comparison_from_error(QEMU64_UNDER_KVM + ", lm")
    verdict = decide(
        guest,
        "db01",
        view("a", DOMCAPS_KVM, comparison=as_on_source),
        view("b", DOMCAPS_KVM, comparison=worse),
    )
    assert verdict.conflicts == ()
    [warning] = verdict.warnings
    assert "lacks lm" in warning and "svm" not in warning and "check='none'" in warning


def test_host_passthrough_under_tcg_is_refused() -> None:
    guest = guest_cpu(with_cpu("<cpu mode='host-passthrough'/>"))
    [conflict] = decide(guest, "db01", view("a"), view("b")).conflicts
    assert "host-passthrough is not available under QEMU emulation" in conflict
    assert "<cpu mode='maximum'/>" in conflict


@pytest.mark.parametrize("mode", ["host-passthrough", "maximum"])
def test_host_bound_modes_between_different_host_cpus_warn(mode: str) -> None:
    guest = guest_cpu(with_cpu(f"<cpu mode='{mode}'/>", "kvm"))
    same = decide(guest, "db01", view("a", DOMCAPS_KVM), view("b", DOMCAPS_KVM))
    assert same.conflicts == () and same.warnings == ()
    verdict = decide(
        guest, "db01", view("a", DOMCAPS_KVM), view("b", DOMCAPS_KVM, other_host_caps())
    )
    assert verdict.conflicts == ()
    [warning] = verdict.warnings
    assert "a has AMD kvm64, b AMD Skylake-Client" in warning and "b lacks avx512f" in warning


def test_maximum_under_tcg_does_not_depend_on_the_host_cpu() -> None:
    guest = guest_cpu(with_cpu("<cpu mode='maximum'/>"))
    verdict = decide(guest, "db01", view("a"), view("b", caps=other_host_caps()))
    assert verdict.conflicts == () and verdict.warnings == ()


def test_host_model_is_fine_where_offered() -> None:
    guest = guest_cpu(with_cpu("<cpu mode='host-model'/>"))
    verdict = decide(guest, "db01", view("a"), view("b", caps=other_host_caps()))
    assert verdict.conflicts == () and verdict.warnings == ()


def test_machine_type_missing_on_the_destination_is_refused() -> None:
    guest = guest_cpu(DB01)
    error = "invalid argument: the machine 'pc-i440fx-7.2' is not supported by emulator"
    [conflict] = decide(guest, "db01", view("a"), HostView("b", machine_error=error)).conflicts
    assert guest.machine is not None and guest.machine in conflict and "virsh edit db01" in conflict


def test_no_such_domain_type_is_left_to_the_host_check_and_no_cpu_is_fine() -> None:
    kvm_guest = guest_cpu(with_cpu(SKYLAKE, "kvm"))
    missing = HostView("b", virttype_error="KVM is not supported on this host")
    assert decide(kvm_guest, "db01", view("a"), missing).conflicts == ()
    none = GuestCpu("qemu", "x86_64", "pc", "none")
    assert decide(none, "db01", view("a"), view("b")) == decide(none, "x", view("c"), view("d"))
    assert decide(none, "db01", view("a"), view("b")).conflicts == ()
