"""The emulated TPM's state (swtpm) on a host: read, write, commit and remove whole directories.

libvirt keeps a VM's TPM state in ``/var/lib/libvirt/swtpm/<uuid>/`` (a few KiB). Every path
given here must be ``ROOT/<name>``, the name a UUID or a ``.kvmclone-partial-<job>-<uuid>``
staging name; files are read and written relative to directory descriptors opened with
``O_NOFOLLOW``, and only whole directories of that form are removed. This runs as root on the
destination: it is the one place outside the destination pool where a clone writes
(docs/decisions.md, decision 16). The client side is ``kvm_clone_tui/engine/tpm_state.py``.

Commands (one JSON line each): ``tpm-pack PATH [--summary]`` (the tree, files base64-encoded,
and its digest; ``{"exists": false}`` when there is none), ``tpm-unpack PATH`` (stdin: a
``tpm-pack`` answer; writes a new directory, fsynced, and answers with what it reads back),
``tpm-commit STAGING FINAL`` (rename, never replacing) and ``tpm-remove PATH...``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import stat
import sys
from typing import Any

from .wire import AgentError, emit, error_kind

ROOT = "/var/lib/libvirt/swtpm"
UUID = r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}"
NAME = re.compile(r"^(\.kvmclone-partial-[A-Za-z0-9_.-]+-)?" + UUID + "$")
#: TPM state is a few KiB; anything much larger is not what this copies (the client's
#: ``tpm_state.MAX_STATE_BYTES`` is this value).
MAX_STATE_BYTES = 16 << 20
NOFOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW


def checked(path: str) -> str:
    """``path`` if it is ``ROOT/<uuid or staging name>``; else refused."""
    if os.path.dirname(path) != ROOT or not NAME.match(os.path.basename(path)):
        raise AgentError("path", f"refused TPM state path {path}: not {ROOT}/<uuid>", path)
    return path


def _walk(dfd: int, rel: str, out: list[dict[str, Any]], total: int) -> int:
    for name in sorted(os.listdir(dfd)):
        path = rel + "/" + name if rel else name
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        entry: dict[str, Any] = {
            "path": path,
            "mode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
        }
        with contextlib.suppress(KeyError):
            entry["user"] = pwd.getpwuid(st.st_uid).pw_name
        with contextlib.suppress(KeyError):
            entry["group"] = grp.getgrgid(st.st_gid).gr_name
        if stat.S_ISDIR(st.st_mode):
            entry["type"] = "dir"
            out.append(entry)
            sub = os.open(name, DIRECTORY, dir_fd=dfd)
            try:
                total = _walk(sub, path, out, total)
            finally:
                os.close(sub)
        elif stat.S_ISREG(st.st_mode):
            data = _read_file(name, dfd)
            total += len(data)
            if total > MAX_STATE_BYTES:
                raise AgentError(
                    "io", f"the TPM state is larger than {MAX_STATE_BYTES} bytes: not a TPM state"
                )
            entry.update(type="file", size=len(data), data=base64.b64encode(data).decode())
            out.append(entry)
        else:
            raise AgentError("path", f"{path} in the TPM state is not a file or directory")
    return total


def _read_file(name: str, dfd: int) -> bytes:
    fd = os.open(name, os.O_RDONLY | NOFOLLOW, dir_fd=dfd)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def digest(entries: list[dict[str, Any]]) -> str:
    """sha256 over (path, type, mode) and the sha256 of the contents of every entry, in order."""
    h = hashlib.sha256()
    for e in entries:
        data = base64.b64decode(e.get("data", ""))
        h.update(json.dumps([e["path"], e["type"], e["mode"]]).encode() + b"\0")
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def pack(path: str) -> dict[str, Any]:
    """The directory ``path`` as a JSON-able tree (or ``{"exists": False}``)."""
    try:
        dfd = os.open(checked(path), DIRECTORY)
    except FileNotFoundError:
        return {"exists": False}
    try:
        st = os.fstat(dfd)
        entries: list[dict[str, Any]] = []
        total = _walk(dfd, "", entries, 0)
    finally:
        os.close(dfd)
    return {
        "exists": True,
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "entries": entries,
        "bytes": total,
        "digest": digest(entries),
    }


def _owner(e: dict[str, Any]) -> tuple[int, int]:
    uid, gid = int(e["uid"]), int(e["gid"])
    with contextlib.suppress(KeyError):
        uid = pwd.getpwnam(e["user"]).pw_uid if "user" in e else uid
    with contextlib.suppress(KeyError):
        gid = grp.getgrnam(e["group"]).gr_gid if "group" in e else gid
    return uid, gid


def unpack(path: str, packed: dict[str, Any]) -> dict[str, Any]:
    """Write ``packed`` (a ``pack`` answer) as the new directory ``path``; its digest read back."""
    checked(path)
    if not os.path.isdir(ROOT):
        os.makedirs(ROOT, 0o711)
    os.mkdir(path, 0o700)
    top = os.open(path, DIRECTORY)
    dirs = {"": top}
    try:
        for e in packed["entries"]:
            _unpack_entry(e, dirs)
        for _rel, fd in sorted(dirs.items(), reverse=True):
            os.fsync(fd)
        os.fchown(top, *_owner(packed))
        os.fchmod(top, packed["mode"])
    finally:
        for fd in dirs.values():
            os.close(fd)
    _fsync_root()
    written = pack(path)
    return {"digest": written["digest"], "bytes": written["bytes"]}


def _unpack_entry(e: dict[str, Any], dirs: dict[str, int]) -> None:
    rel = e["path"]
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise AgentError("path", f"bad path in the TPM state: {rel!r}")
    parent = dirs.get("/".join(parts[:-1]))
    if parent is None:
        raise AgentError("protocol", f"bad order in the TPM state: {rel!r}")
    name = parts[-1]
    if e["type"] == "dir":
        os.mkdir(name, 0o700, dir_fd=parent)
        fd = os.open(name, DIRECTORY, dir_fd=parent)
        dirs[rel] = fd
    else:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW
        fd = os.open(name, flags, 0o600, dir_fd=parent)
        try:
            view = memoryview(base64.b64decode(e["data"]))
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
    os.fchown(fd, *_owner(e))
    os.fchmod(fd, e["mode"])
    if e["type"] != "dir":
        os.close(fd)


def _fsync_root() -> None:
    root = os.open(ROOT, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(root)
    finally:
        os.close(root)


def commit(staging: str, final: str) -> dict[str, Any]:
    """Rename the staged directory to its final name (refused when that exists)."""
    checked(staging), checked(final)
    if os.path.lexists(final):
        raise AgentError("exists", f"{final} already exists", final)
    os.rename(staging, final)
    _fsync_root()
    return {"ok": True}


def remove(paths: list[str]) -> dict[str, Any]:
    """Remove whole state directories (missing ones are skipped)."""
    removed = []
    for path in paths:
        try:
            st = os.lstat(checked(path))
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise AgentError("path", f"{path} is not a directory", path)
        shutil.rmtree(path)
        removed.append(path)
    return {"ok": True, "removed": removed}


def _answer(work: Any) -> int:
    """Run ``work()`` and print its answer; an OSError says which file (as it always did)."""
    try:
        out = work()
    except OSError as exc:
        message = f"{exc.filename or 'TPM state'}: {exc.strerror}"
        raise AgentError(error_kind(exc), message) from None
    emit(out)
    return 0


def cmd_tpm_pack(args: argparse.Namespace) -> int:
    def work() -> dict[str, Any]:
        out = pack(args.path)
        if args.summary and out["exists"]:
            out = {k: v for k, v in out.items() if k != "entries"}
        return out

    return _answer(work)


def cmd_tpm_unpack(args: argparse.Namespace) -> int:
    return _answer(lambda: unpack(args.path, json.load(sys.stdin)))


def cmd_tpm_commit(args: argparse.Namespace) -> int:
    return _answer(lambda: commit(args.staging, args.final))


def cmd_tpm_remove(args: argparse.Namespace) -> int:
    return _answer(lambda: remove(args.path))
