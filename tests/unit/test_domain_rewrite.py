"""The clone's domain definition from the source's inactive XML (pure; fixtures from the lab).

The fixtures in ``tests/unit/data`` are ``virsh dumpxml --inactive`` of the lab's sample VMs on
alpha; ``rich01.xml`` is the same of a VM with most of what virt-install writes (defined on beta
for the dump, then undefined).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kvm_clone_tui.engine.domain_rewrite import (
    KVMCLONE_NS,
    DiskMapping,
    RewriteError,
    RewriteOptions,
    RewriteResult,
    read_clone_metadata,
    rewrite_domain,
)

DATA = Path(__file__).parent / "data"
NEW_UUID = "6f1c2b1e-8d4a-4f6e-9b3c-2a1d0e9f8c7b"
POOL = "/var/lib/libvirt/images"
MAC = re.compile(r"52:54:00(:[0-9a-f]{2}){3}")
OSINFO_NS = "http://libosinfo.org/xmlns/libvirt/domain/1.0"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


def fixture(name: str) -> str:
    return (DATA / f"{name}.xml").read_text()


def mapping(target: str, fmt: str = "qcow2", name: str = "clone") -> DiskMapping:
    return DiskMapping(target=target, new_path=f"{POOL}/{name}-{target}.{fmt}", new_format=fmt)


def options(*targets: str, **changes: object) -> RewriteOptions:
    base: dict[str, object] = {
        "new_name": "clone",
        "new_uuid": NEW_UUID,
        "disks": {t: mapping(t) for t in targets},
        "mac_seed": "job-1",
    }
    base.update(changes)
    return RewriteOptions(**base)  # type: ignore[arg-type]


def rewrite(name_or_xml: str, *targets: str, **changes: object) -> RewriteResult:
    xml = name_or_xml if name_or_xml.lstrip().startswith("<") else fixture(name_or_xml)
    return rewrite_domain(xml, options(*targets, **changes))


def tree(result: RewriteResult) -> ET.Element:
    return ET.fromstring(result.xml)


def disk(root: ET.Element, target: str) -> ET.Element:
    found = [d for d in root.iter("disk") if d.find("target").get("dev") == target]  # type: ignore[union-attr]
    assert len(found) == 1
    return found[0]


def macs_of(root: ET.Element) -> list[str | None]:
    return [
        m.get("address") if (m := i.find("mac")) is not None else None
        for i in root.iter("interface")
    ]


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


# --- identity and disks --------------------------------------------------------------------


def test_db01_both_disks_get_their_new_paths_and_formats() -> None:
    result = rewrite_domain(
        fixture("db01"),
        options(disks={"vda": mapping("vda", "qcow2"), "vdb": mapping("vdb", "raw")}),
    )
    root = tree(result)
    assert root.findtext("name") == "clone"
    assert root.findtext("uuid") == NEW_UUID
    vda, vdb = disk(root, "vda"), disk(root, "vdb")
    assert vda.get("type") == "file" and vdb.get("type") == "file"
    assert vda.find("source").attrib == {"file": f"{POOL}/clone-vda.qcow2"}  # type: ignore[union-attr]
    assert vdb.find("source").attrib == {"file": f"{POOL}/clone-vdb.raw"}  # type: ignore[union-attr]
    assert vda.find("driver").attrib == {"name": "qemu", "type": "qcow2"}  # type: ignore[union-attr]
    assert vdb.find("driver").attrib == {"name": "qemu", "type": "raw"}  # type: ignore[union-attr]
    assert root.find(".//backingStore") is None
    assert "/db01/" not in result.xml
    assert result.warnings == ()


def test_db01_nothing_else_changes() -> None:
    """Everything but name, uuid, disk sources and driver types, MAC and metadata is as it was."""
    source = fixture("db01")
    result = rewrite_domain(
        source, options("vda", "vdb", metadata={"source-vm": "db01"}, mac_seed="s")
    )
    [(old_mac, new_mac)] = result.macs
    assert old_mac == "52:54:00:6c:ab:02"
    expected = source
    for old, new in [
        ("<name>db01</name>", "<name>clone</name>"),
        ("946976e5-e35a-41d9-8787-bfebc9e62fa7", NEW_UUID),
        ("/var/lib/libvirt/images/db01/sys/disk.img", f"{POOL}/clone-vda.qcow2"),
        ("/var/lib/libvirt/images/db01/data/disk.img", f"{POOL}/clone-vdb.qcow2"),
        ("type='raw'", "type='qcow2'"),
        (old_mac, new_mac),
        (
            "</uuid>\n",
            f"</uuid>\n  <metadata><kvmclone:clone xmlns:kvmclone='{KVMCLONE_NS}' "
            "source-vm='db01'/></metadata>\n",
        ),
    ]:
        expected = replace_once(expected, old, new)
    assert ET.canonicalize(result.xml) == ET.canonicalize(expected)


def test_backing_store_is_removed_and_other_disk_details_kept() -> None:
    source = fixture("rich01")
    assert "<backingStore" in source
    root = tree(rewrite(source, "vda", "vdb"))
    vda = disk(root, "vda")
    assert vda.find("backingStore") is None
    assert root.find(".//backingStore") is None
    assert vda.find("driver").attrib == {  # type: ignore[union-attr]
        "name": "qemu",
        "type": "qcow2",
        "cache": "none",
        "discard": "unmap",
    }
    # startupPolicy is the VM's own setting: kept
    assert vda.find("source").attrib == {  # type: ignore[union-attr]
        "file": f"{POOL}/clone-vda.qcow2",
        "startupPolicy": "optional",
    }
    assert disk(root, "vdb").findtext("serial") == "DATA0001"
    assert vda.find("address").get("bus") == "0x05"  # type: ignore[union-attr]


def test_a_disk_without_driver_gets_one_and_source_index_is_dropped() -> None:
    source = replace_once(
        fixture("db01"),
        "<driver name='qemu' type='qcow2'/>\n      "
        "<source file='/var/lib/libvirt/images/db01/data/disk.img'/>",
        "<source file='/var/lib/libvirt/images/db01/data/disk.img' index='2'>"
        "<seclabel model='dac' relabel='no'/></source>",
    )
    vdb = disk(tree(rewrite(source, "vda", "vdb")), "vdb")
    driver = vdb[0]
    assert driver.tag == "driver" and driver.attrib == {"name": "qemu", "type": "qcow2"}
    source_element = vdb.find("source")
    assert source_element is not None
    assert source_element.attrib == {"file": f"{POOL}/clone-vdb.qcow2"}
    assert source_element.find("seclabel") is not None  # the VM's own relabel setting stays


def test_a_disk_without_type_is_a_file_disk() -> None:
    source = fixture("db01").replace("<disk type='file' device='disk'>", "<disk device='disk'>")
    root = tree(rewrite(source, "vda", "vdb"))
    assert disk(root, "vda").get("type") == "file"


def test_running_domain_id_and_dynamic_labels_are_removed() -> None:
    source = replace_once(fixture("rich01"), "<domain type='qemu'", "<domain type='qemu' id='7'")
    source = replace_once(
        source,
        "<seclabel type='dynamic' model='dac' relabel='yes'/>",
        "<seclabel type='dynamic' model='selinux' relabel='yes'>\n"
        "    <label>system_u:system_r:svirt_t:s0:c12,c345</label>\n"
        "    <imagelabel>system_u:object_r:svirt_image_t:s0:c12,c345</imagelabel>\n"
        "    <baselabel>system_u:system_r:svirt_t:s0</baselabel>\n"
        "  </seclabel>\n"
        "  <seclabel type='static' model='dac' relabel='no'>\n"
        "    <label>+107:+107</label>\n"
        "  </seclabel>",
    )
    source = replace_once(source, "<name>", "<id>7</id>\n  <name>")
    root = tree(rewrite(source, "vda", "vdb"))
    assert "id" not in root.attrib
    assert root.find("id") is None
    dynamic, static = root.findall("seclabel")
    assert [c.tag for c in dynamic] == ["baselabel"]
    assert dynamic.attrib == {"type": "dynamic", "model": "selinux", "relabel": "yes"}
    assert static.findtext("label") == "+107:+107"


def test_generation_id_and_smbios_uuid_follow_the_clone() -> None:
    root = tree(rewrite("rich01", "vda", "vdb"))
    genid = root.find("genid")
    assert genid is not None and not genid.text  # libvirt generates a new one
    entries = {e.get("name"): e.text for e in root.iterfind("sysinfo/system/entry")}
    assert entries["uuid"] == NEW_UUID
    assert entries["serial"] == "rich01-0001"


def test_uuid_is_added_when_the_source_has_none() -> None:
    source = re.sub(r"\s*<uuid>[^<]*</uuid>", "", fixture("db01"))
    root = tree(rewrite(source, "vda", "vdb"))
    assert [c.tag for c in root][:2] == ["name", "uuid"]
    assert root.findtext("uuid") == NEW_UUID


# --- CD-ROMs and floppies ------------------------------------------------------------------


def test_installer_cdrom_not_on_the_destination_is_ejected_with_a_warning() -> None:
    result = rewrite("installer", "vda")
    cdrom = disk(tree(result), "sda")
    assert cdrom.find("source") is None
    assert cdrom.get("device") == "cdrom" and cdrom.find("readonly") is not None
    assert result.warnings == (
        "cdrom sda: /var/lib/libvirt/images/iso/tools.iso is not on the destination; ejected",
    )


def test_installer_cdrom_present_on_the_destination_is_kept() -> None:
    iso = "/var/lib/libvirt/images/iso/tools.iso"
    result = rewrite("installer", "vda", cdrom_paths_present=frozenset({iso}))
    cdrom = disk(tree(result), "sda")
    assert cdrom.find("source").attrib == {"file": iso}  # type: ignore[union-attr]
    assert result.warnings == ()


def test_empty_cdrom_stays_empty_and_cdroms_are_never_mapped() -> None:
    result = rewrite("rich01", "vda", "vdb")
    root = tree(result)
    assert disk(root, "sdb").find("source") is None
    assert not any("sdb" in w for w in result.warnings)
    with pytest.raises(RewriteError, match="sda"):
        rewrite("installer", "vda", "sda")


def test_floppy_block_cdrom_and_network_cdrom_are_ejected() -> None:
    extra = (
        "<disk type='file' device='floppy'><source file='/srv/boot.img'/>"
        "<target dev='fda' bus='fdc'/></disk>"
        "<disk type='block' device='cdrom'><source dev='/dev/sr0'/>"
        "<target dev='sdc' bus='sata'/><readonly/></disk>"
        "<disk type='network' device='cdrom'>"
        "<source protocol='https' name='/images/netinst.iso'><host name='example.org'/></source>"
        "<target dev='sdd' bus='sata'/><readonly/></disk>"
    )
    source = replace_once(
        fixture("installer"), "<controller type='usb'", extra + "<controller type='usb'"
    )
    result = rewrite(source, "vda", cdrom_paths_present=frozenset({"/dev/sr0"}))
    root = tree(result)
    assert disk(root, "fda").find("source") is None
    assert disk(root, "sdc").find("source").get("dev") == "/dev/sr0"  # type: ignore[union-attr]
    sdd = disk(root, "sdd")
    assert sdd.find("source") is None and sdd.get("type") == "file"
    assert "floppy fda: /srv/boot.img is not on the destination; ejected" in result.warnings
    assert any(w.startswith("cdrom sdd: the network image https:") for w in result.warnings)


# --- UEFI ----------------------------------------------------------------------------------


def test_uefi01_nvram_is_rewritten_and_loader_kept() -> None:
    nvram_path = f"{POOL}/clone_VARS.fd"
    root = tree(rewrite("uefi01", "vda", nvram_path=nvram_path))
    nvram = root.find("os/nvram")
    assert nvram is not None
    assert nvram.text == nvram_path
    assert nvram.get("template") == "/usr/share/OVMF/OVMF_VARS_4M.fd"
    loader = root.find("os/loader")
    assert loader is not None and loader.text == "/usr/share/OVMF/OVMF_CODE_4M.fd"
    assert loader.attrib == {"readonly": "yes", "type": "pflash"}


def test_nvram_without_a_new_path_is_refused() -> None:
    with pytest.raises(RewriteError, match="nvram"):
        rewrite("uefi01", "vda")


def test_nvram_in_source_element_form() -> None:
    source = replace_once(
        fixture("uefi01"),
        "<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>"
        "/var/lib/libvirt/qemu/nvram/uefi01_VARS.fd</nvram>",
        "<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd' type='file'>"
        "<source file='/var/lib/libvirt/qemu/nvram/uefi01_VARS.fd'/></nvram>",
    )
    root = tree(rewrite(source, "vda", nvram_path="/pool/c_VARS.fd"))
    assert root.find("os/nvram/source").attrib == {"file": "/pool/c_VARS.fd"}  # type: ignore[union-attr]
    network = source.replace(
        "type='file'><source file='/var/lib/libvirt/qemu/nvram/uefi01_VARS.fd'/>",
        "type='network'><source protocol='iscsi' name='x'/>",
    )
    with pytest.raises(RewriteError, match="type='network'"):
        rewrite(network, "vda", nvram_path="/pool/c_VARS.fd")


def test_nvram_path_may_not_be_a_disk_path() -> None:
    with pytest.raises(RewriteError, match="NVRAM file and disk vda"):
        rewrite("uefi01", "vda", nvram_path=f"{POOL}/clone-vda.qcow2")


# --- MAC addresses -------------------------------------------------------------------------


def test_macs_are_new_locally_administered_and_recorded() -> None:
    result = rewrite("rich01", "vda", "vdb")
    old = ["52:54:00:12:34:56", "52:54:00:53:f1:f6"]
    new = macs_of(tree(result))
    assert [pair[0] for pair in result.macs] == old
    assert [pair[1] for pair in result.macs] == new
    assert all(m is not None and MAC.fullmatch(m) for m in new)
    assert len(set(new)) == 2 and not set(new) & set(old)


def test_macs_are_deterministic_with_a_seed() -> None:
    first = rewrite("rich01", "vda", "vdb", mac_seed="job-42")
    again = rewrite("rich01", "vda", "vdb", mac_seed="job-42")
    other = rewrite("rich01", "vda", "vdb", mac_seed="job-43")
    assert first.macs == again.macs
    assert first.xml == again.xml  # the whole output is deterministic
    assert first.macs != other.macs


def test_macs_are_random_without_a_seed() -> None:
    runs = {rewrite("rich01", "vda", "vdb", mac_seed=None).macs for _ in range(3)}
    assert len(runs) == 3


def test_a_seeded_mac_never_equals_an_old_one() -> None:
    """Sources that already hold exactly the MACs the seed gives (a re-run on a clone)."""
    first = rewrite("rich01", "vda", "vdb", mac_seed="s")
    clone_xml = first.xml
    again = rewrite_domain(
        clone_xml,
        options("vda", "vdb", mac_seed="s", new_uuid="0b6cf3f8-0000-4000-8000-000000000001"),
    )
    seeded = {new for _, new in first.macs}
    assert {old for old, _ in again.macs} == seeded
    assert not {new for _, new in again.macs} & seeded
    assert len({new for _, new in again.macs}) == 2


def test_preserve_mac_keeps_them_and_adds_missing_ones() -> None:
    source = replace_once(fixture("rich01"), "<mac address='52:54:00:53:f1:f6'/>", "")
    result = rewrite(source, "vda", "vdb", preserve_mac=True)
    old, added = result.macs
    assert old == ("52:54:00:12:34:56", "52:54:00:12:34:56")
    assert added[0] is None and MAC.fullmatch(added[1]) and added[1] != old[1]
    root = tree(result)
    assert macs_of(root) == ["52:54:00:12:34:56", added[1]]
    second = list(root.iter("interface"))[1]
    assert second[0].tag == "mac"


def test_interface_without_mac_gets_one() -> None:
    source = replace_once(fixture("db01"), "<mac address='52:54:00:6c:ab:02'/>", "")
    result = rewrite(source, "vda", "vdb")
    [(old, new)] = result.macs
    assert old is None and macs_of(tree(result)) == [new]


# --- refused disks and devices -------------------------------------------------------------


def with_vdb(source: str, replacement: str) -> str:
    start = source.index("<disk type='file' device='disk'>", source.index("</disk>"))
    end = source.index("</disk>", start) + len("</disk>")
    return source[:start] + replacement + source[end:]


@pytest.mark.parametrize(
    ("vdb", "message"),
    [
        (
            "<disk type='block' device='disk'><driver name='qemu' type='raw'/>"
            "<source dev='/dev/vg0/db01-data'/><target dev='vdb' bus='virtio'/></disk>",
            "disk vdb is a block device: block devices are not supported for cloning",
        ),
        (
            "<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
            "<source protocol='rbd' name='pool/db01-data'><host name='ceph1' port='6789'/>"
            "</source><target dev='vdb' bus='virtio'/></disk>",
            "disk vdb is a network disk: network disks are not supported for cloning",
        ),
        (
            "<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>"
            "<source pool='default' volume='db01-data.qcow2'/>"
            "<target dev='vdb' bus='virtio'/></disk>",
            "disk vdb is a storage pool volume (default/db01-data.qcow2): not supported; "
            "define it with a file path",
        ),
        (
            "<disk type='block' device='lun'><source dev='/dev/sdx'/>"
            "<target dev='sdx' bus='scsi'/></disk>",
            "disk sdx is a LUN passthrough: not supported",
        ),
        (
            "<disk type='dir' device='disk'><source dir='/srv/share'/>"
            "<target dev='vdb' bus='virtio'/></disk>",
            "disk vdb has the source type 'dir'",
        ),
        (
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            "<target dev='vdb' bus='virtio'/></disk>",
            "disk vdb has no source file",
        ),
        (
            "<disk type='file' device='disk'><source file='/x.img'/></disk>",
            "a <disk> has no <target dev=...>",
        ),
        (
            "<disk type='file' device='disk'><source file='/x.img'/>"
            "<target dev='vda' bus='virtio'/></disk>",
            "two disks have the target vda",
        ),
        (
            "<disk type='file' device='tape'><source file='/x.img'/>"
            "<target dev='vdb' bus='virtio'/></disk>",
            "disk vdb has the unknown device type 'tape'",
        ),
        (
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            "<source file='/x.img'><dataStore type='file'><format type='raw'/>"
            "<source file='/x.data'/></dataStore></source><target dev='vdb'/></disk>",
            "disk vdb uses <dataStore>",
        ),
    ],
)
def test_disks_that_cannot_be_cloned_are_refused(vdb: str, message: str) -> None:
    with pytest.raises(RewriteError) as caught:
        rewrite(with_vdb(fixture("db01"), vdb), "vda", "vdb")
    assert message in str(caught.value)


def test_a_disk_without_mapping_is_refused() -> None:
    with pytest.raises(RewriteError, match=r"^disk vdb has no destination mapping$"):
        rewrite("db01", "vda")


def test_a_mapping_without_disk_is_refused() -> None:
    with pytest.raises(RewriteError, match="disk mapping for vdc: the domain has no such disk"):
        rewrite("db01", "vda", "vdb", "vdc")


@pytest.mark.parametrize(
    ("disks", "message"),
    [
        ({"vda": DiskMapping("vdb", "/p/a.img", "raw")}, "under 'vda' is for target 'vdb'"),
        ({"vda": DiskMapping("vda", "p/a.img", "raw")}, "disk vda: bad path 'p/a.img'"),
        ({"vda": DiskMapping("vda", "/p/../a.img", "raw")}, "disk vda: bad path"),
        ({"vda": DiskMapping("vda", "/p/a.img", "raw'/><x")}, "disk vda: bad image format"),
        (
            {
                "vda": DiskMapping("vda", "/p/disk.img", "raw"),
                "vdb": DiskMapping("vdb", "/p/disk.img", "raw"),
            },
            "disks vda and vdb are both mapped to /p/disk.img",
        ),
    ],
)
def test_bad_mappings_are_refused(disks: dict[str, DiskMapping], message: str) -> None:
    with pytest.raises(RewriteError) as caught:
        rewrite_domain(fixture("db01"), options(disks=disks))
    assert message in str(caught.value)


def test_tpm_emulator_is_kept_and_passthrough_warned() -> None:
    emulator = "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>"
    source = replace_once(fixture("db01"), "<memballoon", emulator + "<memballoon")
    kept = tree(rewrite(source, "vda", "vdb")).find("devices/tpm")
    assert kept is not None and kept.get("model") == "tpm-crb"
    assert kept.find("backend").attrib == {"type": "emulator", "version": "2.0"}  # type: ignore[union-attr]
    elsewhere = emulator.replace("'2.0'/>", "'2.0'><source type='dir' path='/srv/tpm'/></backend>")
    source = replace_once(fixture("db01"), "<memballoon", elsewhere + "<memballoon")
    with pytest.raises(RewriteError, match=r"^the TPM keeps its state in a place of its own"):
        rewrite(source, "vda", "vdb")
    passthrough = (
        "<tpm model='tpm-tis'><backend type='passthrough'><device path='/dev/tpm0'/>"
        "</backend></tpm>"
    )
    source = replace_once(fixture("db01"), "<memballoon", passthrough + "<memballoon")
    result = rewrite(source, "vda", "vdb")
    assert any(w.startswith("tpm:") for w in result.warnings)


# --- untrusted input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        "<!DOCTYPE domain><domain><name>x</name></domain>",
        '<!DOCTYPE domain SYSTEM "file:///etc/passwd"><domain><name>x</name></domain>',
        '<?xml version="1.0"?>\n<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        "<domain><name>&b;</name></domain>",
        '<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/shadow">]><domain><name>&x;</name></domain>',
    ],
)
def test_doctype_and_entities_are_refused(document: str) -> None:
    with pytest.raises(RewriteError, match="DOCTYPE"):
        rewrite_domain(document, options())
    with pytest.raises(RewriteError, match="DOCTYPE"):
        read_clone_metadata(document)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("<network><name>default</name></network>", "expected a <domain> document, got <network>"),
        ("<domain type='kvm'><uuid>x</uuid></domain>", "domain XML has no <name>"),
        ("<domain type='kvm'><name>  </name></domain>", "domain XML has no <name>"),
        ("<domain><name>x</name>", "malformed domain XML"),
        ("", "malformed domain XML"),
        ("<domain><name>&undefined;</name></domain>", "malformed domain XML"),
    ],
)
def test_unusable_documents_are_refused(document: str, message: str) -> None:
    with pytest.raises(RewriteError, match=re.escape(message)):
        rewrite_domain(document, options())


@pytest.mark.parametrize(
    "name", ["", "a/b", "-oops", "..", "db\n01", "tab\there", "nul\0", "rtl\u202eevil", "x" * 256]
)
def test_hostile_names_are_refused(name: str) -> None:
    with pytest.raises(RewriteError, match="bad VM name"):
        rewrite("db01", "vda", "vdb", new_name=name)


@pytest.mark.parametrize("name", ["app.v2", "db01 copy", "web-01_b", "clone\u00e9"])
def test_unusual_but_valid_names_are_accepted(name: str) -> None:
    assert tree(rewrite("db01", "vda", "vdb", new_name=name)).findtext("name") == name


def test_names_and_paths_xml_cannot_carry_are_refused() -> None:
    with pytest.raises(RewriteError, match="XML cannot carry"):
        rewrite("db01", "vda", "vdb", new_name="db\uffff")
    with pytest.raises(RewriteError, match="XML cannot carry"):
        rewrite("uefi01", "vda", nvram_path="/pool/x\ufffe")


def test_bad_or_reused_uuid_is_refused() -> None:
    with pytest.raises(RewriteError, match="bad new UUID"):
        rewrite("db01", "vda", "vdb", new_uuid="not-a-uuid")
    with pytest.raises(RewriteError, match="the source VM's own UUID"):
        rewrite("db01", "vda", "vdb", new_uuid="946976E5-E35A-41D9-8787-BFEBC9E62FA7")


def test_hostile_text_is_escaped_in_the_output() -> None:
    source = replace_once(
        fixture("rich01"),
        "<description>A VM with most of what virt-install writes</description>",
        "<description>a &lt;b&gt; &amp; &quot;c&quot; ]]&gt; 'd'</description>",
    )
    result = rewrite(
        source, "vda", "vdb", new_name="x<y>&\"z'", metadata={"note": "a\"b'c<d>&e\nf\tg"}
    )
    root = tree(result)
    assert root.findtext("name") == "x<y>&\"z'"
    assert root.findtext("description") == "a <b> & \"c\" ]]> 'd'"
    assert read_clone_metadata(result.xml) == {"note": "a\"b'c<d>&e\nf\tg"}


# --- metadata ------------------------------------------------------------------------------


def test_metadata_is_written_and_read_back() -> None:
    meta = {"source-host": "alpha", "source-vm": "db01", "source-uuid": "946976e5", "job": "7"}
    result = rewrite("db01", "vda", "vdb", metadata=meta)
    assert read_clone_metadata(result.xml) == meta
    assert f'<kvmclone:clone xmlns:kvmclone="{KVMCLONE_NS}" source-host="alpha"' in result.xml
    root = tree(result)
    assert [c.tag for c in root][:3] == ["name", "uuid", "metadata"]


def test_metadata_replaces_an_old_clone_element_and_keeps_other_metadata() -> None:
    source = fixture("rich01")
    assert read_clone_metadata(source) == {"source-host": "gamma", "source-vm": "older"}
    result = rewrite(source, "vda", "vdb", metadata={"source-host": "alpha"})
    root = tree(result)
    metadata = root.find("metadata")
    assert metadata is not None
    assert [c.tag for c in metadata] == [f"{{{OSINFO_NS}}}libosinfo", f"{{{KVMCLONE_NS}}}clone"]
    assert read_clone_metadata(result.xml) == {"source-host": "alpha"}
    # the other application's prefix is kept as it was
    assert f'<libosinfo:libosinfo xmlns:libosinfo="{OSINFO_NS}">' in result.xml
    assert '<libosinfo:os id="http://debian.org/debian/12"/>' in result.xml


def test_no_metadata_drops_a_stale_clone_element() -> None:
    result = rewrite("rich01", "vda", "vdb")
    assert read_clone_metadata(result.xml) == {}
    assert tree(result).find(f"metadata/{{{OSINFO_NS}}}libosinfo") is not None
    assert "<metadata>" not in rewrite("db01", "vda", "vdb").xml


@pytest.mark.parametrize("key", ["", "a b", "x:y", "1abc", "a=b", 'a"'])
def test_bad_metadata_keys_are_refused(key: str) -> None:
    with pytest.raises(RewriteError, match="bad metadata key"):
        rewrite("db01", "vda", "vdb", metadata={key: "v"})


def test_bad_metadata_value_is_refused() -> None:
    with pytest.raises(RewriteError, match="bad metadata value"):
        rewrite("db01", "vda", "vdb", metadata={"k": "bell\x07"})


def test_read_clone_metadata_of_plain_domains() -> None:
    assert read_clone_metadata(fixture("db01")) == {}
    with pytest.raises(RewriteError):
        read_clone_metadata("<domain><name>x")


# --- host paths: channels, consoles, graphics, boot files ----------------------------------


def test_writer_console_log_is_renamed_and_kernel_warned() -> None:
    result = rewrite("writer", "vda", new_name="writer-copy")
    root = tree(result)
    paths = [s.get("path") for s in root.iterfind("devices/*/source") if s.get("path")]
    assert paths == ["/var/log/libvirt/qemu/writer-copy-console.log"] * 2
    assert result.warnings == (
        "os kernel /var/lib/libvirt/boot/writer-vmlinuz is not copied; it must exist on the "
        "destination",
        "os initrd /var/lib/libvirt/boot/writer-initrd.gz is not copied; it must exist on the "
        "destination",
    )


def test_rich01_serial_without_the_name_is_kept_with_a_warning() -> None:
    result = rewrite("rich01", "vda", "vdb")
    serial0, serial1 = tree(result).iterfind("devices/serial/source")
    assert serial0.get("path") == "/var/log/libvirt/qemu/clone-serial0.log"
    assert serial1.get("path") == "/var/log/libvirt/qemu/ttyS1.log"
    assert (
        "serial 1: /var/log/libvirt/qemu/ttyS1.log does not contain the VM name; kept as it is, "
        "it may collide with another VM's"
    ) in result.warnings


def test_chardev_log_file_is_renamed() -> None:
    source = replace_once(
        fixture("db01"),
        "<serial type='pty'>",
        "<serial type='pty'><log file='/var/log/libvirt/qemu/db01-serial0.log' append='on'/>",
    )
    log = tree(rewrite(source, "vda", "vdb")).find("devices/serial/log")
    assert log is not None
    assert log.attrib == {"file": "/var/log/libvirt/qemu/clone-serial0.log", "append": "on"}


def test_managed_channel_socket_path_is_dropped_others_kept() -> None:
    legacy = (
        "<source mode='bind' path='/var/lib/libvirt/qemu/channel/target/"
        "kvmclone-fixture-rich01.org.qemu.guest_agent.0'/>\n      "
    )
    source = replace_once(
        fixture("rich01"),
        "<channel type='unix'>\n      ",
        "<channel type='unix'>\n      " + legacy,
    )
    source = replace_once(
        source,
        "<input type='mouse'",
        "<channel type='unix'><source mode='bind' path='/srv/sockets/agent.sock'/>"
        "<target type='virtio' name='org.example.agent'/></channel><input type='mouse'",
    )
    result = rewrite(source, "vda", "vdb")
    managed, custom = tree(result).iterfind("devices/channel/source")
    assert managed.attrib == {"mode": "bind"}
    assert custom.get("path") == "/srv/sockets/agent.sock"
    assert any(w.startswith("channel org.example.agent: /srv/sockets") for w in result.warnings)


def test_fixed_graphics_ports_are_kept_with_a_warning_only_without_autoport() -> None:
    result = rewrite("rich01", "vda", "vdb")
    graphics = tree(result).find("devices/graphics")
    assert graphics is not None and graphics.get("port") == "5907"
    assert (
        "graphics vnc: fixed port 5907, websocket 5707 kept (autoport='no'); it may be taken on "
        "the destination"
    ) in result.warnings
    auto = fixture("rich01").replace(
        "port='5907' autoport='no' websocket='5707'", "port='-1' autoport='yes'"
    )
    assert not any(w.startswith("graphics") for w in rewrite(auto, "vda", "vdb").warnings)
    bound = fixture("rich01").replace("address='0.0.0.0'", "address='192.0.2.10'")
    assert any("192.0.2.10" in w for w in rewrite(bound, "vda", "vdb").warnings)


def test_host_devices_and_filesystems_are_warned() -> None:
    extra = (
        "<hostdev mode='subsystem' type='pci' managed='yes'><source>"
        "<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source></hostdev>"
        "<filesystem type='mount' accessmode='passthrough'><source dir='/srv/share'/>"
        "<target dir='share'/></filesystem>"
    )
    source = replace_once(fixture("db01"), "<memballoon", extra + "<memballoon")
    warnings = rewrite(source, "vda", "vdb").warnings
    assert any(w.startswith("hostdev pci:") for w in warnings)
    assert any(w.startswith("filesystem /srv/share:") for w in warnings)


# --- output fidelity -----------------------------------------------------------------------


def test_unknown_elements_and_namespaces_are_preserved() -> None:
    source = replace_once(
        fixture("rich01"),
        "<memballoon",
        "<shmem name='ivshmem0'><model type='ivshmem-plain'/><size unit='M'>4</size></shmem>"
        "<futuredevice kind='x'><setting>1</setting></futuredevice><memballoon",
    )
    source = replace_once(
        source,
        "</metadata>",
        "<app xmlns='http://example.org/app/1'><child a='1'/><plain xmlns=''>t</plain></app>"
        "<ex:thing xmlns:ex='http://example.org/ex' ex:attr='v' xml:lang='en'/></metadata>",
    )
    result = rewrite(source, "vda", "vdb")
    root = tree(result)
    assert root.find("devices/futuredevice/setting").text == "1"  # type: ignore[union-attr]
    assert root.find("devices/shmem/size").text == "4"  # type: ignore[union-attr]
    app = root.find("metadata/{http://example.org/app/1}app")
    assert app is not None
    assert [c.tag for c in app] == ["{http://example.org/app/1}child", "plain"]
    thing = root.find("metadata/{http://example.org/ex}thing")
    assert thing is not None
    assert thing.attrib == {
        "{http://example.org/ex}attr": "v",
        "{http://www.w3.org/XML/1998/namespace}lang": "en",
    }
    assert f'<domain xmlns:qemu="{QEMU_NS}"' in result.xml
    assert "<qemu:commandline>" in result.xml
    assert [a.get("value") for a in root.iter(f"{{{QEMU_NS}}}arg")] == ["-sandbox", "off"]
    assert "qemu:commandline passthrough is copied as it is; check it suits the destination" in (
        result.warnings
    )


@pytest.mark.parametrize("name", ["db01", "installer", "uefi01", "writer", "rich01"])
def test_every_fixture_rewrites_to_well_formed_xml(name: str) -> None:
    source = fixture(name)
    targets = [
        str(d.find("target/[@dev]").get("dev"))  # type: ignore[union-attr]
        for d in ET.fromstring(source).iter("disk")
        if d.get("device") == "disk"
    ]
    result = rewrite(source, *targets, nvram_path="/pool/VARS.fd", metadata={"k": "v"})
    root = ET.fromstring(result.xml)
    assert root.tag == "domain" and root.findtext("name") == "clone"
    assert result.xml.endswith("</domain>\n")
    # the result is itself a valid input (a clone of a clone)
    again = rewrite_domain(
        result.xml,
        options(
            *targets,
            new_name="clone2",
            new_uuid="0b6cf3f8-0000-4000-8000-000000000002",
            nvram_path="/pool/VARS2.fd",
        ),
    )
    assert read_clone_metadata(again.xml) == {}


def shape(element: ET.Element) -> tuple[object, ...]:
    """An element tree as namespace URIs see it: prefixes do not matter, names and text do."""
    return (
        element.tag,
        sorted(element.attrib.items()),
        element.text,
        element.tail,
        [shape(child) for child in element],
    )


@pytest.mark.parametrize(
    "body",
    [
        "<metadata><a:x xmlns:a='urn:A'><a:y xmlns:a='urn:B' a:z='1'><a:w/></a:y><a:v/></a:x>"
        "</metadata>",
        "<metadata><p xmlns='urn:D' xmlns:d='urn:D' d:attr='1'><q/><r xmlns=''><s/></r></p>"
        "</metadata>",
        "<q:e xmlns:q='urn:R' xmlns:r='urn:Q' r:at='2'><q:f r:at='3'/></q:e>",
        "<description>a\r\nb &amp; ]]&gt; &#13;</description><e a='&#10;&#9;&#13;&lt;'/>",
    ],
)
def test_namespaces_and_text_survive_the_rewrite(body: str) -> None:
    source = f"<domain type='kvm' xmlns:q='urn:Q'><name>ns</name>{body}</domain>"
    result = rewrite_domain(source, options())
    expected = ET.fromstring(source)
    for element in expected.iter("name"):
        element.text = "clone"
    expected.insert(1, ET.Element("uuid"))
    expected[1].text = NEW_UUID
    assert shape(ET.fromstring(result.xml)) == shape(expected)
