"""The layers stay apart: the engine never imports Textual; the UI never talks to libvirt/SSH."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "kvm_clone_tui"

# folder (or file) -> modules it must never import
FORBIDDEN = {
    "engine": {"textual", "rich", "kvm_clone_tui.tui", "kvm_clone_tui.cli", "kvm_clone_tui.lab"},
    # The agent runs on the hosts with nothing but python3: standard library only.
    "agent/agent.py": {"kvm_clone_tui", "textual", "libvirt", "asyncssh", "yaml", "platformdirs"},
    "tui": {"libvirt", "libvirtaio", "asyncssh"},
    "cli": {"libvirt", "libvirtaio", "asyncssh"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def violates(module: str, forbidden: set[str]) -> bool:
    return any(module == f or module.startswith(f + ".") for f in forbidden)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports(layer: str) -> None:
    folder = PACKAGE / layer
    files = [folder] if folder.suffix == ".py" and folder.exists() else sorted(folder.rglob("*.py"))
    if layer in ("engine", "cli"):
        assert files, f"{folder} has no modules"
    bad = [
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in files
        for module in sorted(imported_modules(path))
        if violates(module, FORBIDDEN[layer])
    ]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import libvirt\nfrom textual.app import App\n")
    assert {"libvirt", "textual.app"} <= imported_modules(sample)
    assert violates("textual.app", FORBIDDEN["engine"])
