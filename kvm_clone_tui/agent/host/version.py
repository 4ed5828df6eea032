"""The agent's own version: the first 16 hex digits of the sha256 of the zipapp it came in.

Run from the checked zipapp (``python3 agent-<version>.pyz``), that is the hash of the file it
runs from; run from the compiled form the host built from it (docs/agent.md), the ``VERSION``
member written there at build time (the digest that was checked); a bootstrap that loads the
package from memory sets ``VERSION`` itself. Imported from a source tree: ``unknown``.
"""

from __future__ import annotations

import hashlib
from typing import Any

#: Set by whoever loaded the package without a file (the bootstrap); else found on first use.
VERSION: str | None = None
#: The member of the compiled form that names the digest of the zipapp it was built from.
VERSION_MEMBER = "VERSION"


def agent_version() -> str:
    """This agent's version (computed once per run)."""
    global VERSION
    if VERSION is None:
        VERSION = _find_version()
    return VERSION


def _find_version() -> str:
    loader: Any = globals().get("__loader__")
    archive = getattr(loader, "archive", None)  # a zipimporter: the zip we were loaded from
    if not isinstance(archive, str):
        return "unknown"
    try:
        # get_data reads one member through the zipimporter: no zipfile import at start-up.
        data = loader.get_data(archive + "/" + VERSION_MEMBER)
        return str(data.decode().strip()[:16])
    except OSError:
        pass  # no such member: this is the zipapp as shipped
    try:
        with open(archive, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:16]
    except OSError:
        return "unknown"
