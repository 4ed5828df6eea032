"""Shipping the agent: one stdlib-only package, one deterministic zipapp, cached and compiled
once per digest on a host, and a damaged cached copy never runs."""

from __future__ import annotations

import ast
import base64
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from kvm_clone_tui import agent as agent_pkg
from kvm_clone_tui.agent import AGENT_DIGEST, AGENT_VERSION, AGENT_ZIP, INSTALL, zipapp
from tests.unit.test_agent import PYTHONS, _python_id

__all__ = ["python"]

AGENT_DIR = Path(agent_pkg.__file__).parent
HOST_DIR = AGENT_DIR / "host"
#: The files that run on the hosts: the package, and what the client runs with ``python3 -c``.
HOST_FILES = [*sorted(HOST_DIR.glob("*.py")), AGENT_DIR / "install.py", AGENT_DIR / "bootstrap.py"]


@pytest.fixture(params=PYTHONS, ids=_python_id)
def python(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("path", HOST_FILES, ids=lambda p: p.name)
def test_host_code_is_small_documented_stdlib_only_python38(path: Path) -> None:
    text = path.read_text()
    tree = ast.parse(text, feature_version=(3, 8))
    assert ast.get_docstring(tree), f"{path.name} has no docstring"
    assert len(text.splitlines()) < 700
    absolute = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    absolute |= {
        n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0
    } - {None}
    roots = {str(name).split(".")[0] for name in absolute}
    assert roots - {"__future__"} <= set(sys.stdlib_module_names), roots
    relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    assert all(n.level == 1 for n in relative)  # within the package, whatever it is named
    assert path.parent == HOST_DIR or not relative


def test_the_zipapp_is_built_deterministically_from_the_package() -> None:
    again = zipapp.build()
    assert again == AGENT_ZIP and zipapp.digest(again) == AGENT_DIGEST
    assert AGENT_DIGEST[:16] == AGENT_VERSION
    elsewhere = subprocess.run(  # another process, another time: the same bytes
        [
            sys.executable,
            "-c",
            "import sys; from kvm_clone_tui.agent import zipapp; "
            "sys.stdout.buffer.write(zipapp.build())",
        ],
        capture_output=True,
        check=True,
    ).stdout
    assert elsewhere == AGENT_ZIP
    with zipfile.ZipFile(io.BytesIO(AGENT_ZIP)) as z:
        names = z.namelist()
        assert names[0] == "__main__.py" and names[1:] == sorted(names[1:])
        shipped = {n: z.read(n) for n in names}
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    expected = {f"kvm_clone_agent/{p.name}": p.read_bytes() for p in HOST_DIR.glob("*.py")}
    assert {n: b for n, b in shipped.items() if n != "__main__.py"} == expected


def _install(
    home: Path, python: str, mode: str, data: bytes | None = None, prefix: Sequence[str] = ()
) -> Any:
    done = subprocess.run(
        [*prefix, python, "-c", INSTALL, mode, AGENT_VERSION, AGENT_DIGEST],
        input=base64.b64encode(data) if data is not None else b"",
        capture_output=True,
        env={**os.environ, "HOME": str(home)},
        timeout=120,
    )
    if done.returncode != 0:
        return done.returncode
    return json.loads(done.stdout)


def test_install_caches_and_compiles_once_and_replaces_a_damaged_copy(
    python: str, tmp_path: Path
) -> None:
    cache = tmp_path / ".cache" / "kvm-clone"
    assert _install(tmp_path, python, "check") == {"missing": True}
    assert _install(tmp_path, python, "install", AGENT_ZIP[:-1] + b"x") == 1  # not intact
    assert not (cache / f"agent-{AGENT_VERSION}.pyz").exists()
    run = Path(_install(tmp_path, python, "install", AGENT_ZIP)["run"])
    source = cache / f"agent-{AGENT_VERSION}.pyz"
    assert source.read_bytes() == AGENT_ZIP
    assert run.parent == cache and run.name.startswith(f"agent-{AGENT_VERSION}.cpython-")
    with zipfile.ZipFile(run) as z:  # bytecode only: nothing left for zipimport to compile
        assert all(n == "VERSION" or n.endswith(".pyc") for n in z.namelist())
        assert z.read("VERSION").decode() == AGENT_DIGEST
    probe = subprocess.run([python, str(run), "probe"], capture_output=True, check=True)
    assert json.loads(probe.stdout)["agent_version"] == AGENT_VERSION
    built = run.stat()

    # A later connection checks both and keeps them (built once per digest).
    assert _install(tmp_path, python, "check") == {"run": str(run)}
    assert (run.stat().st_ino, run.stat().st_mtime_ns) == (built.st_ino, built.st_mtime_ns)

    # A damaged compiled copy is refused and rebuilt from the checked zipapp.
    good = run.read_bytes()
    data = bytearray(good)
    at = data.index(b"kvm_clone_agent/cli.pyc") + 200
    data[at] ^= 0xFF
    run.write_bytes(bytes(data))
    assert _install(tmp_path, python, "check") == {"run": str(run)}
    assert run.read_bytes() != bytes(data)
    subprocess.run([python, str(run), "probe"], capture_output=True, check=True)

    # ... so is a compiled copy of other sources under this name.
    with zipfile.ZipFile(run, "a") as z:
        z.writestr("kvm_clone_agent/extra.pyc", b"")
    assert _install(tmp_path, python, "check") == {"run": str(run)}
    assert "kvm_clone_agent/extra.pyc" not in zipfile.ZipFile(run).namelist()

    # ... and one with anything before or after the zip.
    run.write_bytes(run.read_bytes() + b"x")
    assert _install(tmp_path, python, "check") == {"run": str(run)}
    assert not run.read_bytes().endswith(b"x")

    # A damaged zipapp is not run: the client is asked to send it again.
    source.write_bytes(AGENT_ZIP.replace(b"kvm-clone host agent", b"kvm-clone host agenT"))
    assert _install(tmp_path, python, "check") == {"missing": True}
    assert _install(tmp_path, python, "install", AGENT_ZIP) == {"run": str(run)}
    assert source.read_bytes() == AGENT_ZIP
    assert not list(cache.glob("*.tmp"))


def test_install_runs_the_zipapp_where_nothing_can_be_compiled(tmp_path: Path) -> None:
    cache = tmp_path / ".cache" / "kvm-clone"
    run = _install(tmp_path, sys.executable, "install", AGENT_ZIP)["run"]
    Path(run).unlink()
    if os.geteuid() == 0:
        # Root writes through any mode bits: a read-only mount of the cache (in a private mount
        # namespace) stops it as a read-only home would.
        script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
        readonly = ["unshare", "--mount", "--", "sh", "-c", script, str(cache)]
        found = _install(tmp_path, sys.executable, "check", prefix=readonly)
    else:
        cache.chmod(0o500)  # a read-only cache: the compiled form cannot be written
        try:
            found = _install(tmp_path, sys.executable, "check")
        finally:
            cache.chmod(0o700)
    assert found == {"run": str(cache / f"agent-{AGENT_VERSION}.pyz")}
