"""The agent as shipped: one zipapp built deterministically from ``kvm_clone_tui/agent/host``.

The zip holds ``__main__.py`` and the package as ``kvm_clone_agent/*.py``, stored (no
compression: the bytes do not depend on the zlib at hand), in name order, with fixed times and
modes, so the same sources always give the same bytes and so the same digest: the agent's
identity on every host (``AGENT_DIGEST``). Hosts run ``python3 agent-<version>.pyz ARGS``, or
rather the compiled form they build from it once (``install.py``, docs/agent.md).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from importlib import resources

#: The agent package's name inside the zip (its modules import each other relatively).
PACKAGE = "kvm_clone_agent"
#: The zip's entry point.
MAIN = b"""\"\"\"kvm-clone host agent (docs/agent.md).\"\"\"
import sys

from kvm_clone_agent.cli import main

sys.exit(main())
"""
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold


def sources() -> list[tuple[str, bytes]]:
    """(name in the zip, bytes) of every file shipped, in the zip's order."""
    here = resources.files(__package__).joinpath("host")
    files = sorted(
        (f"{PACKAGE}/{entry.name}", entry.read_bytes())
        for entry in here.iterdir()
        if entry.name.endswith(".py") and entry.is_file()
    )
    return [("__main__.py", MAIN), *files]


def build(files: list[tuple[str, bytes]] | None = None) -> bytes:
    """The zipapp's bytes: the same for the same sources, whenever and wherever built."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in sources() if files is None else files:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.create_system = 3  # unix, whatever the client runs on
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    return buf.getvalue()


def digest(data: bytes) -> str:
    """The full sha256 (hex) that hosts check the zipapp against."""
    return hashlib.sha256(data).hexdigest()
