"""The host agent, client side: the zipapp that the client ships to each host, and its identity.

``kvm_clone_tui/agent/host/`` is the agent itself (standard library only, run on the hosts);
``zipapp`` builds it into ``AGENT_ZIP``, deterministically, whose sha256 is ``AGENT_DIGEST``
and whose first 16 hex digits are ``AGENT_VERSION``. ``install.py`` and ``bootstrap.py`` are
the two small programs the client runs with ``python3 -c`` on a host: the first caches the
zipapp there once per digest and compiles it once (``engine/remote_agent.py`` uses it), the
second runs it from stdin, leaving nothing behind. ``protocol`` reads what the agent prints.
See docs/agent.md.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from importlib import resources

from kvm_clone_tui.agent import zipapp

AGENT_ZIP: bytes = zipapp.build()
AGENT_DIGEST: str = zipapp.digest(AGENT_ZIP)
AGENT_VERSION: str = AGENT_DIGEST[:16]

#: ``python3 -c INSTALL (check|install) VERSION DIGEST``: the host's cache of the agent.
INSTALL: str = resources.files(__name__).joinpath("install.py").read_text()
#: ``python3 -c BOOTSTRAP LENGTH DIGEST ARGS``: the agent from stdin, nothing left behind.
BOOTSTRAP: str = resources.files(__name__).joinpath("bootstrap.py").read_text()


def bootstrap_argv(args: Sequence[str], python: str = "python3") -> list[str]:
    """The host command that runs the agent with ``args``; send AGENT_ZIP on stdin first."""
    return [python, "-c", BOOTSTRAP, str(len(AGENT_ZIP)), AGENT_DIGEST, *args]


def bootstrap_command(args: Sequence[str], python: str = "python3") -> str:
    """``bootstrap_argv`` quoted for a remote shell (an SSH command line)."""
    return shlex.join(bootstrap_argv(args, python))


__all__ = [
    "AGENT_DIGEST",
    "AGENT_VERSION",
    "AGENT_ZIP",
    "BOOTSTRAP",
    "INSTALL",
    "bootstrap_argv",
    "bootstrap_command",
]
