"""Paths: accepted only absolute and normalised; opened without following symlinks.

Commands that write act only strictly inside ``--root``: ``open_parent`` walks every directory
below it with ``O_NOFOLLOW | O_DIRECTORY`` and the caller works on the final name with ``dir_fd``.
"""

from __future__ import annotations

import os

from .wire import _CLOEXEC, AgentError, os_error


def check_path(path: str, what: str = "path") -> str:
    """Accept only absolute, normalised paths without NUL bytes."""
    if "\0" in path or not path.startswith("/") or path.startswith("//"):
        raise AgentError("path", f"{what} must be an absolute path: {path!r}", path)
    if os.path.normpath(path) != path:
        raise AgentError("path", f"{what} must be normalised: {path!r}", path)
    return path


def open_parent(root: str, path: str) -> tuple[int, str]:
    """Open the directory of ``path`` (strictly inside ``root``), never following a symlink.

    Returns (directory fd, final name); callers use ``dir_fd`` so nothing can redirect them.
    """
    check_path(root, "--root")
    prefix = check_path(root) if root == "/" else root + "/"
    if not check_path(path).startswith(prefix) or path == root:
        raise AgentError("path", f"{path} is not inside {root}", path)
    parts = path[len(prefix) :].split("/")
    fd = -1
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        for part in parts[:-1]:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
            fd, old = os.open(part, flags, dir_fd=fd), fd
            os.close(old)
    except OSError as exc:
        if fd >= 0:
            os.close(fd)
        raise os_error(exc, path) from None
    return fd, parts[-1]


def open_source(path: str) -> tuple[int, int]:
    """Open a file or block device for reading; return (fd, size)."""
    try:
        fd = os.open(check_path(path), os.O_RDONLY | _CLOEXEC)
    except OSError as exc:
        raise os_error(exc, path) from None
    return fd, os.lseek(fd, 0, os.SEEK_END)


def _unlink_same(dfd: int, name: str, ident: tuple[int, int]) -> bool:
    """Remove ``name`` only if it still is the file that this run created."""
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if (st.st_dev, st.st_ino) != ident:
            return False
        os.unlink(name, dir_fd=dfd)
        os.fsync(dfd)
    except OSError:
        return False
    return True
