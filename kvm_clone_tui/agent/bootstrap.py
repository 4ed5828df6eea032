"""Runs the agent with nothing left on the host: ``python3 -c <this> LENGTH DIGEST ARGS...``.

The client writes the zipapp's bytes to stdin first (then, for ``receive``, the stream). This
reads exactly LENGTH bytes with ``os.read`` (nothing more, so the stream stays on stdin), checks
their sha256 against DIGEST (else ``{"error": ..., "kind": "bootstrap"}``, exit 1), imports the
package from memory and runs its command line. Standard library only, Python 3.8+; every run
compiles the agent again (the cached, compiled install is what the client normally uses).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import os
import sys
import types
import zipfile

PACKAGE = "kvm_clone_agent"


class _MemoryImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports the modules of a zip held in memory (only ``kvm_clone_agent`` and below)."""

    def __init__(self, data: bytes) -> None:
        self.zip = zipfile.ZipFile(io.BytesIO(data))
        self.names = set(self.zip.namelist())

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != PACKAGE and not fullname.startswith(PACKAGE + "."):
            return None
        base = fullname.replace(".", "/")
        for member, package in ((base + "/__init__.py", True), (base + ".py", False)):
            if member in self.names:
                return importlib.util.spec_from_loader(
                    fullname, self, origin="<kvm-clone-agent>/" + member, is_package=package
                )
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        origin = str(module.__spec__.origin if module.__spec__ else "")
        member = origin[len("<kvm-clone-agent>/") :]
        exec(compile(self.zip.read(member), origin, "exec", dont_inherit=True), module.__dict__)


def _read(n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _main() -> int:
    data = _read(int(sys.argv[1]))
    if hashlib.sha256(data).hexdigest() != sys.argv[2]:
        sys.stdout.write('{"error": "agent source did not arrive intact", "kind": "bootstrap"}\n')
        return 1
    sys.meta_path.insert(0, _MemoryImporter(data))
    version = importlib.import_module(PACKAGE + ".version")
    version.VERSION = sys.argv[2][:16]  # type: ignore[attr-defined]
    cli = importlib.import_module(PACKAGE + ".cli")
    sys.argv = ["kvm-clone-agent", *sys.argv[3:]]
    return int(cli.main())


if __name__ == "__main__":
    sys.exit(_main())
