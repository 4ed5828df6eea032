"""TPM state: the domain's <tpm> parse and the agent's ``tpm-*`` commands, run for real on a
temporary root.

The agent's ``tpm`` module normally works in /var/lib/libvirt/swtpm; here its ROOT is a
temporary directory (the only change, made before the command line runs), so it runs from the
shipped zipapp exactly as on a host without touching this machine's libvirt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvm_clone_tui.engine.tpm_state import SWTPM_ROOT, staging_dir, state_dir, tpm_devices
from tests.unit.test_agent import AGENT

OLD = "5a11d0e4-6373-44fb-8501-a7e03fa2d334"
NEW = "754c35f9-61eb-4cda-aab2-1fd8af1a7d49"
JOB = "20260101-120000-abcdef12"


# argv: the zipapp, the swtpm root, then the agent's command line.
_WITH_ROOT = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); from kvm_clone_agent import cli, tpm; "
    "tpm.ROOT = sys.argv.pop(1); sys.exit(cli.main())"
)


def run(root: Path, *args: str, stdin: str | None = None) -> tuple[int, dict[str, object]]:
    assert SWTPM_ROOT == "/var/lib/libvirt/swtpm"
    argv = [sys.executable, "-c", _WITH_ROOT, str(AGENT), str(root), f"tpm-{args[0]}", *args[1:]]
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A swtpm root holding one VM's TPM 2.0 state, as swtpm leaves it."""
    state = tmp_path / "swtpm" / OLD / "tpm2"
    state.mkdir(parents=True)
    (state / "tpm2-00.permall").write_bytes(os.urandom(6104))
    (state / ".lock").write_bytes(b"")
    (state / "tpm2-00.permall").chmod(0o600)
    (state / ".lock").chmod(0o640)
    state.chmod(0o700)
    return tmp_path / "swtpm"


def test_paths_are_named_after_the_uuid() -> None:
    assert state_dir(OLD.upper()) == f"/var/lib/libvirt/swtpm/{OLD}"
    assert staging_dir(JOB, NEW) == f"/var/lib/libvirt/swtpm/.kvmclone-partial-{JOB}-{NEW}"
    with pytest.raises(ValueError):
        state_dir("../../etc")


def test_tpm_devices_are_read() -> None:
    xml = (
        "<domain><devices><tpm model='tpm-crb'><backend type='emulator' version='2.0' "
        "persistent_state='yes'><encryption secret='6dd3e4a5-1d76-44ce-961f-f119f5aad935'/>"
        "</backend></tpm><tpm><backend type='passthrough'/></tpm></devices></domain>"
    )
    emulator, passthrough = tpm_devices(xml)
    assert (emulator.model, emulator.backend, emulator.version) == ("tpm-crb", "emulator", "2.0")
    assert emulator.encrypted and emulator.persistent_state
    assert (passthrough.model, passthrough.backend, passthrough.encrypted) == (
        "tpm-tis",
        "passthrough",
        False,
    )
    assert tpm_devices("<domain><devices/></domain>") == []


def test_pack_unpack_commit_copies_the_tree_exactly(root: Path) -> None:
    code, packed = run(root, "pack", f"{root}/{OLD}")
    assert code == 0 and packed["exists"] and packed["bytes"] == 6104
    staging = f"{root}/.kvmclone-partial-{JOB}-{NEW}"
    code, written = run(root, "unpack", staging, stdin=json.dumps(packed))
    assert code == 0 and written["digest"] == packed["digest"]
    code, _ = run(root, "commit", staging, f"{root}/{NEW}")
    assert code == 0 and not Path(staging).exists()
    for rel in ("tpm2/tpm2-00.permall", "tpm2/.lock"):
        a, b = root / OLD / rel, root / NEW / rel
        assert a.read_bytes() == b.read_bytes()
        assert a.stat().st_mode == b.stat().st_mode and a.stat().st_uid == b.stat().st_uid
    assert (root / NEW / "tpm2").stat().st_mode & 0o777 == 0o700
    # Committing never replaces an existing directory.
    code, _ = run(root, "unpack", staging, stdin=json.dumps(packed))
    code, refused = run(root, "commit", staging, f"{root}/{NEW}")
    assert code == 1 and "already exists" in str(refused["error"])


def test_a_state_that_does_not_exist_is_reported_not_failed(root: Path) -> None:
    assert run(root, "pack", f"{root}/{NEW}") == (0, {"exists": False})


@pytest.mark.parametrize(
    "path",
    ["/etc", "{root}/../x", "{root}/not-a-uuid", "{root}/" + OLD + "/tpm2", "{root}"],
)
def test_paths_outside_the_swtpm_root_or_not_uuid_named_are_refused(root: Path, path: str) -> None:
    target = path.format(root=root)
    for args in (["pack", target], ["remove", target], ["commit", target, f"{root}/{NEW}"]):
        code, out = run(root, *args)
        assert code == 1 and "refused TPM state path" in str(out["error"]), args
    assert (root / OLD / "tpm2" / "tpm2-00.permall").exists()


def test_symlinks_in_the_state_are_refused_and_entries_cannot_escape(root: Path) -> None:
    (root / OLD / "tpm2" / "evil").symlink_to("/etc/passwd")
    code, out = run(root, "pack", f"{root}/{OLD}")
    assert code == 1 and "not a file or directory" in str(out["error"])
    hostile = {
        "mode": 0o700,
        "uid": os.getuid(),
        "gid": os.getgid(),
        "entries": [
            {"path": "../escaped", "type": "file", "mode": 0o600, "uid": 0, "gid": 0, "data": ""}
        ],
    }
    staging = f"{root}/.kvmclone-partial-{JOB}-{NEW}"
    code, out = run(root, "unpack", staging, stdin=json.dumps(hostile))
    assert code == 1 and "bad path" in str(out["error"])
    assert not (root / "escaped").exists()


def test_remove_takes_staged_and_committed_state_and_tolerates_missing(root: Path) -> None:
    code, out = run(root, "remove", f"{root}/{OLD}", f"{root}/{NEW}")
    assert code == 0 and out["removed"] == [f"{root}/{OLD}"]
    assert not (root / OLD).exists()
    (root / "file-not-dir").write_text("x")
    assert run(root, "remove", f"{root}/{NEW}") == (0, {"ok": True, "removed": []})
