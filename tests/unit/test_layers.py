"""The layers stay apart (kvm_clone_tui/api/__init__.py): the contracts, and what an import loads.

``lint-imports`` checks the import graph against the contracts in ``pyproject.toml`` (the UIs
import only the API, the engine no UI, the host agent only the standard library). What the
graph cannot show is what *running* an import loads: importing the TUI app or the CLI entry
must load neither libvirt nor asyncssh (they load when a host is first reached), which is also
what keeps ``kvm-clone --help`` quick. Each check runs in a fresh interpreter.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "kvm_clone_tui"
HOST_LAYERS = ("libvirt", "libvirtaio", "asyncssh")
UI_ENTRIES = (
    "kvm_clone_tui.tui.app",
    "kvm_clone_tui.cli.main",
    "kvm_clone_tui.api",
    "kvm_clone_tui",
)


def loaded_after(statement: str) -> set[str]:
    """The top-level modules a fresh interpreter has loaded after running ``statement``."""
    probe = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return {name.split(".")[0] for name in json.loads(done.stdout.splitlines()[-1])}


@pytest.mark.parametrize("module", UI_ENTRIES)
def test_importing_a_ui_loads_no_host_layer(module: str) -> None:
    loaded = loaded_after(f"import {module}")
    assert not loaded & set(HOST_LAYERS), (
        f"import {module} loads {sorted(loaded & set(HOST_LAYERS))}"
    )


def test_the_facade_loads_no_host_layer_until_a_host_is_reached() -> None:
    statement = (
        "from kvm_clone_tui import KVMCloneClient\n"
        "from kvm_clone_tui.api import Config\n"
        "client = KVMCloneClient(Config())\n"
        "assert client.config is not None\n"
        "import kvm_clone_tui.cli.main as m\n"
        "try:\n"
        "    m.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
    )
    assert not loaded_after(statement) & set(HOST_LAYERS)


def test_reaching_a_host_loads_the_host_layers() -> None:
    """The probe sees a host layer when one is loaded (the check above can fail)."""
    loaded = loaded_after(
        "from kvm_clone_tui import KVMCloneClient\n"
        "from kvm_clone_tui.api import Config\n"
        "KVMCloneClient(Config()).ssh_settings\n"
    )
    assert "asyncssh" in loaded


def test_the_import_contracts_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "import-linter is not installed (pip install -e '.[dev]')"
    done = subprocess.run(
        [lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_the_agent_imports_only_the_standard_library() -> None:
    """Positively: every module the host agent imports is its own or the standard library's."""
    names: set[str] = set()
    for path in sorted((PACKAGE / "agent").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
    assert names, "the agent's imports were not read"
    own = {n for n in names if n == "kvm_clone_tui.agent" or n.startswith("kvm_clone_tui.agent.")}
    foreign = {n.split(".")[0] for n in names - own} - set(sys.stdlib_module_names)
    assert not foreign, sorted(foreign)
