"""The host agent: one standard-library-only file that the client runs on each host.

``AGENT_SOURCE`` holds the bytes of ``agent.py`` and ``AGENT_VERSION`` the first 16 hex digits of
their sha256. The client either saves the source to a file on the host and runs
``python3 FILE ARGS``, or runs ``bootstrap_argv(ARGS)`` and writes ``AGENT_SOURCE`` to its stdin
first: the bootstrap reads exactly that many bytes, checks their hash and runs them, so the rest
of stdin can carry a stream to ``receive``. See docs/agent.md.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Sequence
from importlib import resources

AGENT_SOURCE: bytes = resources.files(__name__).joinpath("agent.py").read_bytes()
AGENT_VERSION: str = hashlib.sha256(AGENT_SOURCE).hexdigest()[:16]

# Runs on the host's python3 (3.8+): argv = [source length, source version, agent args...].
BOOTSTRAP = """\
import hashlib, os, sys
n, b = int(sys.argv[1]), b""
while len(b) < n:
    c = os.read(0, n - len(b))
    if not c:
        break
    b += c
if hashlib.sha256(b).hexdigest()[:16] != sys.argv[2]:
    sys.stdout.write('{"error": "agent source did not arrive intact", "kind": "bootstrap"}\\n')
    sys.exit(1)
sys.argv = ["kvm-clone-agent"] + sys.argv[3:]
exec(compile(b, "kvm-clone-agent", "exec"), {"__name__": "__main__", "__agent_source__": b})
"""


def bootstrap_argv(args: Sequence[str], python: str = "python3") -> list[str]:
    """The host command that runs the agent with ``args``; send AGENT_SOURCE on stdin first."""
    return [python, "-c", BOOTSTRAP, str(len(AGENT_SOURCE)), AGENT_VERSION, *args]


def bootstrap_command(args: Sequence[str], python: str = "python3") -> str:
    """``bootstrap_argv`` quoted for a remote shell (an SSH command line)."""
    return shlex.join(bootstrap_argv(args, python))


__all__ = ["AGENT_SOURCE", "AGENT_VERSION", "BOOTSTRAP", "bootstrap_argv", "bootstrap_command"]
