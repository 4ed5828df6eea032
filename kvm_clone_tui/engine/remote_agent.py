"""Running the host agent (``kvm_clone_tui/agent/agent.py``) on a host over its SSH connection.

The agent is installed once per version into ``~/.cache/kvm-clone/agent-<version>.py`` on the
host (content-addressed, written atomically, checked against its hash), so that pipelines on a
host (``send | ssh other receive``) can name it as a file, and compiled once next to it
(``agent-<version>.<cache tag>.pyc``), so that no run pays for compiling 2,000 lines again
(about 35 ms of every agent call). Only ``python3`` is needed there.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from kvm_clone_tui.agent import AGENT_SOURCE, AGENT_VERSION
from kvm_clone_tui.agent.protocol import AgentFailure, parse_result
from kvm_clone_tui.engine.errors import HostError, RemoteCommandError
from kvm_clone_tui.engine.hosts import Host

# Reads the agent from stdin, checks its hash, writes it atomically; prints its path.
_INSTALL = """\
import hashlib, os, sys
version, size = sys.argv[1], int(sys.argv[2])
data = sys.stdin.buffer.read(size)
if hashlib.sha256(data).hexdigest()[:16] != version:
    sys.exit("agent source did not arrive intact")
folder = os.path.join(os.path.expanduser("~"), ".cache", "kvm-clone")
os.makedirs(folder, mode=0o700, exist_ok=True)
path = os.path.join(folder, "agent-%s.py" % version)
tmp = "%s.%d.tmp" % (path, os.getpid())
with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
os.replace(tmp, path)
"""

# Appended to both: compile the checked agent once (bytecode for this python, named after the
# agent's version), so that every later run skips compiling its source; prints what to run.
_COMPILED = """
run = path
tag = getattr(sys.implementation, "cache_tag", None)
if path and tag:
    pyc = "%s.%s.pyc" % (path[:-3], tag)
    if not os.path.exists(pyc):
        import py_compile
        tmp = "%s.%d.tmp" % (pyc, os.getpid())
        try:
            mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
            py_compile.compile(path, cfile=tmp, doraise=True, invalidation_mode=mode)
            os.replace(tmp, pyc)
        except (OSError, py_compile.PyCompileError):
            pass  # no room or a read-only home: run the source as it is
    if os.path.exists(pyc):
        run = pyc
print(run)
"""

_CHECK = """\
import hashlib, os, sys
path = os.path.join(os.path.expanduser("~"), ".cache", "kvm-clone", "agent-%s.py" % sys.argv[1])
try:
    with open(path, "rb") as f:
        ok = hashlib.sha256(f.read()).hexdigest()[:16] == sys.argv[1]
except OSError:
    ok = False
path = path if ok else ""
"""


# The system's python3 first: a `python3` found on PATH may be a slow shim (pyenv, asdf).
_FIND_PYTHON = (
    "for p in /usr/bin/python3 /usr/local/bin/python3; do "
    'if [ -x "$p" ]; then echo "$p"; exit 0; fi; done; command -v python3 || exit 1'
)


class RemoteAgent:
    """The agent on one host: installed on first use, then run as ``python3 <path> ...``."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.python = "python3"
        self.path: str | None = None

    async def ensure(self) -> str:
        """Install the agent if this version is not on the host yet; return its path."""
        if self.path is not None:
            return self.path
        known = self.host.cache.get(f"agent-{AGENT_VERSION}")
        if isinstance(known, tuple):
            self.python, self.path = known
            return str(self.path)
        found_python = await self.host.run(["sh", "-c", _FIND_PYTHON], check=False)
        if found_python.exit_status != 0 or not found_python.stdout.strip():
            raise HostError(
                self.host.name,
                "no python3 on the host: kvm-clone needs python3 (3.8 or newer) there "
                "(Debian: apt-get install python3)",
            )
        self.python = found_python.stdout.strip()
        try:
            found = await self.host.run([self.python, "-c", _CHECK + _COMPILED, AGENT_VERSION])
        except RemoteCommandError as exc:
            raise HostError(
                self.host.name,
                f"cannot run {self.python} on the host ({exc.message}); kvm-clone needs "
                "python3 (3.8 or newer) there: install it (Debian: apt-get install python3)",
            ) from exc
        path = found.stdout.strip()
        if not path:
            done = await self.host.run(
                [self.python, "-c", _INSTALL + _COMPILED, AGENT_VERSION, str(len(AGENT_SOURCE))],
                input=AGENT_SOURCE.decode(),
            )
            path = done.stdout.strip()
        self.path = path
        self.host.cache[f"agent-{AGENT_VERSION}"] = (self.python, path)
        return path

    async def argv(self, args: Sequence[str]) -> list[str]:
        """The command line that runs the agent with ``args`` on the host."""
        return [self.python, await self.ensure(), *args]

    async def call(
        self, args: Sequence[str], *, timeout: float = 120, input: str | None = None
    ) -> dict[str, Any]:
        """Run an agent command that prints one JSON result; AgentFailure on its errors."""
        argv = await self.argv(args)
        done = await self.host.run(argv, check=False, timeout=timeout, input=input)
        try:
            return parse_result(done.stdout)
        except AgentFailure as exc:
            if exc.kind == "protocol" and done.stderr.strip():
                raise AgentFailure("protocol", done.stderr.strip()[-500:]) from exc
            raise

    async def probe(self, paths: Sequence[str] = ()) -> dict[str, Any]:
        """Versions, tools and free space on the host (see the agent's ``probe``)."""
        args = ["probe"]
        for path in paths:
            args += ["--path", path]
        return await self.call(args)


async def sha_in_hardware(agent: RemoteAgent) -> bool:
    """Whether the agent's host computes SHA-256 in hardware (asked once per connection)."""
    known = agent.host.cache.get("sha_hw")
    if isinstance(known, bool):
        return known
    try:
        found = bool((await agent.probe()).get("sha_hw", False))
    except (AgentFailure, HostError):
        found = False
    agent.host.cache["sha_hw"] = found
    return found


async def shared_digest(a: RemoteAgent, b: RemoteAgent) -> str:
    """The digest both hosts compute fastest: sha256 when both have SHA instructions (about
    2.5x faster than blake2b there), else blake2b."""
    both = await asyncio.gather(sha_in_hardware(a), sha_in_hardware(b))
    return "sha256" if all(both) else "blake2b"


def describe(result: dict[str, Any]) -> str:
    """A compact one-line rendering of an agent result, for logs."""
    return json.dumps(result, sort_keys=True)[:300]
