"""Reading domain XML as hosts really have it, including the odd and the broken."""

from __future__ import annotations

import pytest

from kvm_clone_tui.api.models import DiskDevice
from kvm_clone_tui.engine.domain_xml import DomainXMLError, parse_domain


def test_a_typical_domain() -> None:
    parsed = parse_domain("""
      <domain type='kvm'><name>web01</name><uuid>u-1</uuid><memory unit='GiB'>2</memory>
        <vcpu placement='static'>4</vcpu>
        <os><type>hvm</type><nvram template='/t.fd'>/var/lib/libvirt/qemu/nvram/w.fd</nvram></os>
        <devices>
          <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
            <source file='/img/web01.qcow2'/><target dev='vda' bus='virtio'/>
            <backingStore type='file'><format type='raw'/><source file='/img/base.raw'/>
              <backingStore/></backingStore></disk>
          <disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>
          <interface type='network'><mac address='52:54:00:00:00:01'/>
            <source network='default'/><model type='virtio'/></interface>
          <tpm model='tpm-crb'><backend type='emulator'/></tpm>
        </devices></domain>""")
    assert (parsed.name, parsed.uuid, parsed.domain_type) == ("web01", "u-1", "kvm")
    assert parsed.memory_kib == 2 * 1024 * 1024 and parsed.vcpus == 4
    vda, sda = parsed.disks
    assert (vda.path, vda.format, vda.bus) == ("/img/web01.qcow2", "qcow2", "virtio")
    assert [(b.path, b.format) for b in vda.backing_chain] == [("/img/base.raw", "raw")]
    assert sda.device is DiskDevice.CDROM and sda.path is None and sda.readonly
    assert parsed.nics[0].mac == "52:54:00:00:00:01" and parsed.nics[0].source == "default"
    assert parsed.nvram == "/var/lib/libvirt/qemu/nvram/w.fd" and parsed.tpm
    assert parsed.warnings == []


def test_unexpected_content_becomes_warnings_not_failures() -> None:
    parsed = parse_domain("""
      <domain type='qemu'><name>odd</name><memory unit='furlongs'>3</memory><vcpu>x</vcpu>
        <devices>
          <disk type='file' device='disk'><source file='/a'/></disk>
          <disk type='weird' device='hologram'><target dev='vdz'/></disk>
          <disk type='network' device='disk'><source protocol='rbd' name='pool/img'/>
            <target dev='vdb'/></disk>
          <interface type='bridge'/>
        </devices></domain>""")
    assert parsed.memory_kib == 0 and parsed.vcpus == 1
    assert [d.target for d in parsed.disks] == ["vdz", "vdb"]
    assert parsed.disks[0].device is DiskDevice.DISK and parsed.disks[0].path is None
    assert parsed.disks[1].path == "pool/img" and parsed.disks[1].source_type == "network"
    assert parsed.nics[0].mac is None
    text = " ".join(parsed.warnings)
    assert "furlongs" in text and "without <target" in text and "hologram" in text


@pytest.mark.parametrize(
    "xml",
    [
        "",
        "<domain>",
        "<network><name>x</name></network>",
        "<domain type='kvm'><name> </name></domain>",
    ],
)
def test_unusable_documents_raise_a_clear_error(xml: str) -> None:
    with pytest.raises(DomainXMLError):
        parse_domain(xml)


def test_a_backing_chain_loop_terminates() -> None:
    # Deeply nested (hostile) backing chains are read without recursion limits.
    inner = "<backingStore/>"
    for i in range(200):
        inner = (
            f"<backingStore type='file'><format type='qcow2'/>"
            f"<source file='/b{i}'/>{inner}</backingStore>"
        )
    parsed = parse_domain(
        "<domain type='kvm'><name>deep</name><memory>1</memory><devices>"
        f"<disk type='file' device='disk'><source file='/top'/><target dev='vda'/>{inner}"
        "</disk></devices></domain>"
    )
    assert len(parsed.disks[0].backing_chain) == 200
