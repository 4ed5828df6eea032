"""Rewritten domain XML is accepted by a real libvirtd: defined on beta, read back, undefined."""

from __future__ import annotations

import shlex
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kvm_clone_tui.engine.domain_rewrite import (
    DiskMapping,
    RewriteOptions,
    read_clone_metadata,
    rewrite_domain,
)
from kvm_clone_tui.lab.manager import Lab

DATA = Path(__file__).parents[1] / "unit" / "data"
POOL = "/var/lib/libvirt/images"  # beta's default pool


def ssh(lab: Lab, host: str, command: str, stdin: str | None = None) -> str:
    """Run ``command`` on a lab host with plain OpenSSH; fails the test on a non-zero exit."""
    done = subprocess.run(
        ["ssh", "-F", str(lab.layout.ssh_config), host, command],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{host}: {command}: {done.stderr.strip()}"
    return done.stdout


def source_xml(lab: Lab, vm: str) -> str:
    if vm == "rich01":  # not a lab VM: the fixture dumped from a definition on beta
        return (DATA / "rich01.xml").read_text()
    return ssh(lab, "alpha", f"virsh dumpxml --inactive {vm}")


@pytest.mark.parametrize(
    "vm", ["web01", "db01", "installer", "linked01", "uefi01", "app.v2", "writer", "rich01"]
)
def test_rewritten_domain_defines_on_beta(lab: Lab, vm: str) -> None:
    source = source_xml(lab, vm)
    source_root = ET.fromstring(source)
    new_name = f"kvmclone-rw-{uuid.uuid4().hex[:8]}-{vm}"
    targets = [
        str(d.find("target").get("dev"))  # type: ignore[union-attr]
        for d in source_root.iter("disk")
        if d.get("device") == "disk"
    ]
    disks = {t: DiskMapping(t, f"{POOL}/{new_name}-{t}.qcow2", "qcow2") for t in targets}
    meta = {
        "source-host": "alpha",
        "source-vm": vm,
        "source-uuid": str(source_root.findtext("uuid")),
    }
    options = RewriteOptions(
        new_name=new_name,
        new_uuid=str(uuid.uuid4()),
        disks=disks,
        mac_seed=new_name,
        nvram_path=f"{POOL}/{new_name}_VARS.fd",
        metadata=meta,
    )
    result = rewrite_domain(source, options)

    # define, read back and undefine in one session: the VM exists on beta for milliseconds,
    # and it is undefined even when reading it back fails.
    name = shlex.quote(new_name)
    defined = ssh(
        lab,
        "beta",
        f"virsh define /dev/stdin >/dev/null || exit 1; virsh dumpxml --inactive {name}; "
        f"rc=$?; virsh undefine --keep-nvram {name} >/dev/null || exit 1; exit $rc",
        stdin=result.xml,
    )
    assert new_name not in ssh(lab, "beta", "virsh list --all --name").split()

    root = ET.fromstring(defined)
    assert root.findtext("name") == new_name
    assert root.findtext("uuid") == options.new_uuid
    assert read_clone_metadata(defined) == meta
    macs = [m.get("address") for m in root.iterfind("devices/interface/mac")]
    assert macs == [new for _, new in result.macs]
    assert not set(macs) & {old for old, _ in result.macs}
    sources = {
        d.find("target").get("dev"): d.find("source")  # type: ignore[union-attr]
        for d in root.iter("disk")
    }
    for target, disk_mapping in disks.items():
        source_element = sources[target]
        assert source_element is not None and source_element.get("file") == disk_mapping.new_path
    assert root.find(".//backingStore/source") is None
    if source_root.find("os/nvram") is not None:
        assert root.findtext("os/nvram") == options.nvram_path
    if source_root.findtext("genid"):
        assert root.findtext("genid") not in (None, source_root.findtext("genid"))
    for entry in root.iterfind("sysinfo/system/entry"):
        if entry.get("name") == "uuid":
            assert entry.text == options.new_uuid
