"""Small file operations inside ``--root``: ``put``, ``rename``, ``remove``; and ``stat`` and
``resolve``, which read only.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import stat
import sys
from typing import Any

from .index import drop_index, file_stamp, load_index, save_index
from .paths import check_path, open_parent
from .wire import _CLOEXEC, MAX_JSON, AgentError, emit, os_error


def cmd_put(args: argparse.Namespace) -> int:
    """Write stdin to a file under --root: a new file, or atomically replacing one (--replace)."""
    dfd, name = open_parent(args.root, args.path)
    tmp = f".{name}.put-{os.getpid()}"
    try:
        data = sys.stdin.buffer.read(MAX_JSON + 1)
        if len(data) > MAX_JSON:
            raise AgentError("usage", "put takes at most 1 MiB")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=dfd)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if args.replace:
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        else:
            os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
            os.unlink(tmp, dir_fd=dfd)
        os.fsync(dfd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise os_error(exc, args.path) from None
    finally:
        os.close(dfd)
    emit({"ok": True, "path": args.path, "bytes": len(data)})
    return 0


def cmd_stat(args: argparse.Namespace) -> int:
    """Size, times and identity of files (whether a clone's disks changed since a sync)."""
    out: dict[str, Any] = {}
    for p in args.path:
        try:
            st = os.stat(check_path(p), follow_symlinks=False)
            out[p] = dict(
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                ctime_ns=st.st_ctime_ns,
                ino=st.st_ino,
                dev=st.st_dev,
            )
        except OSError as exc:
            out[p] = os_error(exc, p).as_json()
    emit(dict(paths=out))
    return 0


def cmd_rename(args: argparse.Namespace) -> int:
    sfd, sname = open_parent(args.root, args.src)
    try:
        dfd, dname = open_parent(args.root, args.dst)
    except AgentError:
        os.close(sfd)
        raise
    try:
        if not stat.S_ISREG(os.stat(sname, dir_fd=sfd, follow_symlinks=False).st_mode):
            raise AgentError("path", f"not a regular file: {args.src}", args.src)
        before = file_stamp(os.stat(sname, dir_fd=sfd, follow_symlinks=False))
        index = load_index(sfd, sname, before)
        if args.replace:
            os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
        else:  # link() never replaces anything: a no-clobber rename
            os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
            os.unlink(sname, dir_fd=sfd)
        drop_index(sfd, sname)
        drop_index(dfd, dname)  # a replaced file's
        if index is not None:  # the rename changed the file's ctime: the index follows it
            after = os.stat(dname, dir_fd=dfd, follow_symlinks=False)
            if file_stamp(after)[:3] == before[:3] and after.st_mtime_ns == before[3]:
                save_index(dfd, dname, after, index["block_size"], index["algo"], index["blocks"])
        os.fsync(dfd)
        os.fsync(sfd)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            msg = f"{args.dst} exists (--replace replaces it)"
            raise AgentError("exists", msg, args.dst) from None
        raise os_error(exc, args.src) from None
    finally:
        os.close(sfd)
        os.close(dfd)
    emit({"ok": True, "src": args.src, "dst": args.dst})
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    dfd, name = open_parent(args.root, args.path)
    removed = False
    try:
        if not stat.S_ISREG(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
            raise AgentError("path", f"not a regular file: {args.path}", args.path)
        os.unlink(name, dir_fd=dfd)
        drop_index(dfd, name)
        os.fsync(dfd)
        removed = True
    except OSError as exc:
        if not (exc.errno == errno.ENOENT and args.missing_ok):
            raise os_error(exc, args.path) from None
    finally:
        os.close(dfd)
    emit({"ok": True, "path": args.path, "removed": removed})
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    """What each path is (``file``, ``block`` or ``other``), where it leads and whether it is
    a symlink: how the planner reads a domain's disk sources (errors per path, not fatal)."""
    out: list[dict[str, Any]] = []
    for p in args.path:
        try:
            st = os.stat(p)
            kind = (
                "file"
                if stat.S_ISREG(st.st_mode)
                else "block"
                if stat.S_ISBLK(st.st_mode)
                else "other"
            )
            out.append(
                {"path": p, "real": os.path.realpath(p), "link": os.path.islink(p), "kind": kind}
            )
        except OSError as exc:
            out.append({"path": p, "error": exc.strerror})
    emit({"paths": out})
    return 0
