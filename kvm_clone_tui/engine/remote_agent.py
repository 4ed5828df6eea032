"""The host agent on a host, over its SSH connection: installed once, then called by typed methods.

The agent (``kvm_clone_tui/agent/host/``) ships as one zipapp whose sha256 is its identity. It
is cached once per digest on the host as ``~/.cache/kvm-clone/agent-<version>.pyz`` (checked,
written atomically), and the host compiles it once beside it into
``agent-<version>.<cache tag>.pyz`` (bytecode: zipimport would compile the sources again on
every call, about 15 ms each); both are checked on every new connection (``agent/install.py``).
Pipelines on a host (``send | ssh other receive``) name that file. Everything runs with one
interpreter per host, the one decision 5 names: ``/usr/bin/python3`` where it exists.

Every agent command has a method here (``await agent.rename(src, dst, root=...)``): the argv
of each command is built in this one place. ``send`` and ``receive``, whose command lines go
into pipelines, are built by ``engine/transfer.py`` and run through ``argv``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Sequence
from typing import Any

from kvm_clone_tui.agent import AGENT_DIGEST, AGENT_VERSION, AGENT_ZIP, INSTALL
from kvm_clone_tui.agent.protocol import AgentFailure, parse_result
from kvm_clone_tui.api.errors import HostError, RemoteCommandError
from kvm_clone_tui.engine.host_port import Host

# The system's python3 first: a `python3` found on PATH may be a slow shim (pyenv, asdf).
_FIND_PYTHON = (
    "for p in /usr/bin/python3 /usr/local/bin/python3; do "
    'if [ -x "$p" ]; then echo "$p"; exit 0; fi; done; command -v python3 || exit 1'
)
_NO_PYTHON = "kvm-clone needs python3 (3.8 or newer) there (Debian: apt-get install python3)"


async def host_python(host: Host) -> str:
    """The host's interpreter for everything kvm-clone runs there (asked once per connection)."""
    known = host.cache.get("python")
    if isinstance(known, str):
        return known
    found = await host.run(["sh", "-c", _FIND_PYTHON], check=False)
    python = found.stdout.strip()
    if found.exit_status != 0 or not python:
        raise HostError(host.name, f"no python3 on the host: {_NO_PYTHON}")
    host.cache["python"] = python
    return python


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
        self.python = await host_python(self.host)
        found = await self._install("check")
        if "run" not in found:
            found = await self._install("install", base64.b64encode(AGENT_ZIP).decode())
        path = str(found["run"])
        self.path = path
        self.host.cache[f"agent-{AGENT_VERSION}"] = (self.python, path)
        return path

    async def _install(self, mode: str, data: str | None = None) -> dict[str, Any]:
        argv = [self.python, "-c", INSTALL, mode, AGENT_VERSION, AGENT_DIGEST]
        try:
            done = await self.host.run(argv, input=data)
        except RemoteCommandError as exc:
            if mode == "install":
                raise
            raise HostError(
                self.host.name,
                f"cannot run {self.python} on the host ({exc.message}); {_NO_PYTHON}",
            ) from exc
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise HostError(
                self.host.name, f"host agent install said {done.stdout!r:.200}"
            ) from None
        if not isinstance(answer, dict):
            raise HostError(self.host.name, f"host agent install said {answer!r:.200}")
        return answer

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

    # ------------------------------------------------------------ the agent's commands

    async def probe(self, paths: Sequence[str] = ()) -> dict[str, Any]:
        """Versions, tools and free space on the host (see the agent's ``probe``)."""
        args = ["probe"]
        for path in paths:
            args += ["--path", path]
        return await self.call(args)

    async def extents(self, path: str) -> dict[str, Any]:
        """Size, allocation and data extents of a file."""
        return await self.call(["extents", path])

    async def stat(self, paths: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Per path its ``size``, ``mtime_ns``, ``ctime_ns``, ``ino``, ``dev`` (or ``error``)."""
        found: dict[str, dict[str, Any]] = (await self.call(["stat", *paths]))["paths"]
        return found

    async def resolve(self, paths: Sequence[str]) -> list[dict[str, Any]]:
        """Per path (in order) its ``kind``, ``real`` path and ``link`` (or ``error``)."""
        found: list[dict[str, Any]] = (await self.call(["resolve", *paths]))["paths"]
        return found

    async def hash(
        self,
        path: str,
        *,
        block_size: int,
        algo: str,
        index_root: str | None = None,
        index_only: bool = False,
    ) -> dict[str, Any]:
        """Block digests of a file (``index_root``: from/into its block index)."""
        args = ["hash", path, "--block-size", str(block_size), "--algo", algo]
        if index_root is not None:
            args += ["--index", "--root", index_root]
        if index_only:
            args.append("--index-only")
        return await self.call(args, timeout=3600)

    async def index_refresh(
        self, path: str, *, root: str, was: str, kept: list[tuple[int, int]]
    ) -> dict[str, Any]:
        """Renew a file's block index after a change of its qcow2 metadata only."""
        args = ["index-refresh", path, "--root", root, "--was", was]
        return await self.call(args, input=json.dumps(kept), timeout=600)

    async def put(self, path: str, data: str, *, root: str, replace: bool = False) -> None:
        """Write ``data`` (at most 1 MiB) to a file under ``root``, fsynced."""
        args = ["put", path, "--root", root] + (["--replace"] if replace else [])
        await self.call(args, input=data)

    async def rename(self, src: str, dst: str, *, root: str, replace: bool = False) -> None:
        """Rename a file within ``root`` (an existing ``dst`` is refused unless ``replace``)."""
        await self.call(["rename", src, dst, "--root", root] + (["--replace"] if replace else []))

    async def remove(self, path: str, *, root: str, missing_ok: bool = False) -> None:
        """Remove a regular file within ``root``."""
        await self.call(["remove", path, "--root", root] + (["--missing-ok"] if missing_ok else []))

    async def undo_apply(
        self, undo: str, *, root: str, target: str | None = None, nbd: tuple[str, str] | None = None
    ) -> dict[str, Any]:
        """Put back what an undo log saved, into ``target`` or the NBD export ``(socket, name)``."""
        args = ["undo-apply", undo, "--root", root]
        if nbd is not None:
            args += ["--nbd", nbd[0], "--export", nbd[1]]
        else:
            args += ["--target", str(target)]
        return await self.call(args, timeout=3600)

    async def tpm_pack(self, path: str, *, summary: bool = False) -> dict[str, Any]:
        """A TPM state directory as JSON (with ``summary``: its size and digest only)."""
        return await self.call(["tpm-pack", path] + (["--summary"] if summary else []))

    async def tpm_unpack(self, path: str, packed: dict[str, Any]) -> dict[str, Any]:
        """Write a ``tpm_pack`` answer as the new directory ``path``; its digest read back."""
        return await self.call(["tpm-unpack", path], input=json.dumps(packed))

    async def tpm_commit(self, staging: str, final: str) -> None:
        """Rename a staged TPM state directory to its final name (never replacing)."""
        await self.call(["tpm-commit", staging, final])

    async def tpm_remove(self, paths: Sequence[str]) -> dict[str, Any]:
        """Remove TPM state directories (missing ones are skipped)."""
        return await self.call(["tpm-remove", *paths])


#: The typed client of the host agent (the name the architecture notes use).
AgentClient = RemoteAgent


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
