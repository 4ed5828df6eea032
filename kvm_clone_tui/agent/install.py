"""Installs the agent on a host once per digest: ``python3 -c <this> MODE VERSION DIGEST``.

Run by the client over SSH with the host's python3 (standard library only, Python 3.8+):

- ``check``: is ``~/.cache/kvm-clone/agent-<VERSION>.pyz`` there, with sha256 DIGEST?
  Answers ``{"missing": true}`` if not (then the client sends it with ``install``);
- ``install``: stdin is the zipapp in base64; checked against DIGEST (else exit 1), written
  to that name atomically (temporary file, fsync, rename, fsync of the folder).

Both then make sure of the compiled form ``agent-<VERSION>.<cache tag>.pyz`` beside it: a zip of
the same modules as bytecode for this python (unchecked-hash pycs: the name carries the
version) and a ``VERSION`` member holding DIGEST. It is built once per digest and python (in
memory from the checked bytes, then written as above), and checked on every run of this
script: its framing (nothing before or after the zip), its members' CRCs, its ``VERSION``, and
every pyc's header (this python's magic, the hash of its source member in the checked
zipapp); a copy that fails is replaced. The answer is one JSON line: ``{"run": path}``, the
compiled form or, where it cannot be written, the zipapp itself (zipimport never writes
bytecode, so running the zipapp compiles all of it on every call).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import marshal
import os
import sys
import zipfile

VERSION_MEMBER = "VERSION"
_HASHED_UNCHECKED = (1).to_bytes(4, "little")  # pyc flags: hash-based, source never checked


def _folder() -> str:
    folder = os.path.join(os.path.expanduser("~"), ".cache", "kvm-clone")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return folder


def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _checked(path: str, digest: str) -> bytes | None:
    """The file's bytes if their sha256 is ``digest``."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == digest else None


def _modules(source: bytes) -> dict[str, bytes]:
    """The ``.py`` members of the checked zipapp."""
    with zipfile.ZipFile(io.BytesIO(source)) as z:
        return {n: z.read(n) for n in z.namelist() if n.endswith(".py")}


def _compiled(source_path: str, source: bytes, digest: str) -> bytes:
    """The compiled form of the checked zipapp, for this python."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(VERSION_MEMBER, digest)
        for name, text in sorted(_modules(source).items()):
            code = compile(text, source_path + "/" + name, "exec", dont_inherit=True, optimize=0)
            head = importlib.util.MAGIC_NUMBER + _HASHED_UNCHECKED
            z.writestr(name + "c", head + importlib.util.source_hash(text) + marshal.dumps(code))
    return buf.getvalue()


def _compiled_ok(path: str, source: bytes, digest: str) -> bool:
    """Whether ``path`` is intact and compiled from exactly ``source`` by this python."""
    try:
        with open(path, "rb") as f:  # nothing before the first member, nothing after the end
            start = f.read(4)
            f.seek(-22, os.SEEK_END)
            end = f.read(22)
        if start != b"PK\x03\x04" or end[:4] != b"PK\x05\x06" or end[20:] != b"\0\0":
            return False
        with zipfile.ZipFile(path) as z:
            if z.testzip() is not None or z.read(VERSION_MEMBER).decode() != digest:
                return False
            modules = _modules(source)
            if set(z.namelist()) != {VERSION_MEMBER} | {n + "c" for n in modules}:
                return False
            head = importlib.util.MAGIC_NUMBER + _HASHED_UNCHECKED
            for name, text in modules.items():
                pyc = z.read(name + "c")
                if pyc[:8] != head or pyc[8:16] != importlib.util.source_hash(text):
                    return False
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False
    return True


def _runnable(source_path: str, source: bytes, digest: str) -> str:
    """The compiled form (built or rebuilt if need be), else the zipapp itself."""
    tag = getattr(sys.implementation, "cache_tag", None)
    if not tag:
        return source_path
    path = f"{source_path[: -len('.pyz')]}.{tag}.pyz"
    if _compiled_ok(path, source, digest):
        return path
    try:
        _write_atomically(path, _compiled(source_path, source, digest))
    except (OSError, SyntaxError, ValueError):
        return source_path  # no room or a read-only home: run the zipapp as it is
    return path if _compiled_ok(path, source, digest) else source_path


def main(argv: list[str]) -> int:
    mode, version, digest = argv
    source_path = os.path.join(_folder(), f"agent-{version}.pyz")
    if mode == "install":
        sent = base64.b64decode(sys.stdin.buffer.read())
        if hashlib.sha256(sent).hexdigest() != digest:
            sys.stderr.write("agent zipapp did not arrive intact\n")
            return 1
        _write_atomically(source_path, sent)
    source = _checked(source_path, digest)
    if source is None:
        print(json.dumps({"missing": True}))
        return 0
    print(json.dumps({"run": _runnable(source_path, source, digest)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
