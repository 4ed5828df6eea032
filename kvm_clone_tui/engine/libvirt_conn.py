"""libvirt over the host's SSH connection: the remote socket forwarded, calls off the event loop.

The remote libvirt socket is forwarded through the host's one asyncssh connection to a local
socket in a private directory, and libvirt-python opens ``qemu+unix:///system?socket=...`` on it:
one SSH login serves commands, disks and libvirt. Every libvirt call runs in a small thread pool
of its own (libvirt calls block); lifecycle events arrive on libvirt's default event loop,
which runs in one daemon thread for the whole process, and are handed to asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import asyncssh
import libvirt

from kvm_clone_tui.api.errors import LibvirtError

T = TypeVar("T")

DEFAULT_URI = "qemu:///system"
DEFAULT_SOCKET = "/var/run/libvirt/libvirt-sock"

_event_loop_lock = threading.Lock()
_event_loop_started = False


def ensure_event_loop() -> None:
    """Start libvirt's default event implementation in a daemon thread (once per process).

    It must be registered before the first connection is opened; it drives keepalives and
    domain events for every connection of the process.
    """
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        # libvirt prints every error to stderr by default; ours are raised as exceptions.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


def _libvirt_message(exc: libvirt.libvirtError) -> str:
    return str(exc.get_error_message() or exc)


class LibvirtConnection:
    """A libvirt connection to one host, tunnelled through its SSH connection."""

    def __init__(
        self,
        host: str,
        ssh: asyncssh.SSHClientConnection,
        *,
        uri: str = DEFAULT_URI,
        remote_socket: str | None = None,
    ) -> None:
        self.host = host
        self.uri = uri
        self._ssh = ssh
        self._remote_socket = remote_socket or DEFAULT_SOCKET
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"libvirt-{host}")
        self._tmpdir: str | None = None
        self._listener: asyncssh.SSHListener | None = None
        self._conn: libvirt.virConnect | None = None
        self._callback_ids: list[int] = []
        self._callbacks: list[Callable[[str, int, int], None]] = []
        self._local_uri = ""

    @property
    def conn(self) -> libvirt.virConnect:
        """The open ``virConnect`` (use it only inside :meth:`call`)."""
        if self._conn is None:
            raise LibvirtError(self.host, "libvirt connection is not open")
        return self._conn

    async def open(self, timeout: float = 30) -> None:
        """Forward the socket and open libvirt on it."""
        ensure_event_loop()
        self._tmpdir = tempfile.mkdtemp(prefix="kvm-clone-libvirt-")
        local = str(Path(self._tmpdir) / "libvirt-sock")
        try:
            self._listener = await self._ssh.forward_local_path(local, self._remote_socket)
        except asyncssh.Error as exc:
            await self.close()
            raise LibvirtError(self.host, f"cannot forward the libvirt socket: {exc}") from exc
        self._local_uri = f"qemu+unix:///system?socket={quote(local, safe='/')}"
        try:
            self._conn = await asyncio.wait_for(self._run(self._open_blocking), timeout)
        except libvirt.libvirtError as exc:
            await self.close()
            raise LibvirtError(
                self.host,
                f"libvirt is not answering on {self._remote_socket} "
                f"({_libvirt_message(exc)}); is libvirtd running on the host?",
            ) from exc
        except asyncio.TimeoutError as exc:
            await self.close()
            raise LibvirtError(self.host, f"libvirt did not answer within {timeout:.0f} s") from exc

    def _open_blocking(self) -> libvirt.virConnect:
        conn = libvirt.open(self._local_uri)
        conn.setKeepAlive(5, 3)
        return conn

    async def _reopen(self, timeout: float = 60) -> None:
        """Open libvirt again after libvirtd restarted (the SSH forward stays); re-subscribe."""
        old, self._conn = self._conn, None
        if old is not None:
            with contextlib.suppress(libvirt.libvirtError):
                await self._run(old.close)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                self._conn = await self._run(self._open_blocking)
                break
            except libvirt.libvirtError as exc:
                if loop.time() > deadline:
                    raise LibvirtError(
                        self.host,
                        f"libvirt did not come back within {timeout:.0f} s: "
                        f"{_libvirt_message(exc)}",
                    ) from exc
                await asyncio.sleep(0.5)
        callbacks, self._callbacks, self._callback_ids = self._callbacks, [], []
        for callback in callbacks:
            await self.register_domain_events(callback)

    async def _run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn)

    async def call(self, fn: Callable[[libvirt.virConnect], T]) -> T:
        """Run ``fn(virConnect)`` in the libvirt thread pool; libvirt errors become LibvirtError.

        When libvirtd went away (restarted, crashed) the connection is opened again and the
        call made once more: every call the engine makes is safe to repeat.
        """
        conn = self.conn
        try:
            return await self._run(lambda: fn(conn))
        except libvirt.libvirtError as exc:
            if not self._lost(exc, conn):
                raise LibvirtError(self.host, _libvirt_message(exc)) from exc
        await self._reopen()
        conn = self.conn
        try:
            return await self._run(lambda: fn(conn))
        except libvirt.libvirtError as exc:
            raise LibvirtError(self.host, _libvirt_message(exc)) from exc

    @staticmethod
    def _lost(exc: libvirt.libvirtError, conn: libvirt.virConnect) -> bool:
        """True when the error means the connection to libvirtd is gone."""
        lost_codes = {
            libvirt.VIR_ERR_SYSTEM_ERROR,
            libvirt.VIR_ERR_RPC,
            libvirt.VIR_ERR_NO_CONNECT,
            libvirt.VIR_ERR_INVALID_CONN,
        }
        if exc.get_error_code() in lost_codes:
            return True
        try:
            return not conn.isAlive()
        except libvirt.libvirtError:
            return True

    async def register_domain_events(self, callback: Callable[[str, int, int], None]) -> None:
        """Call ``callback(name, event, detail)`` on the asyncio loop for lifecycle events."""
        loop = asyncio.get_running_loop()

        def on_event(_conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
            name = dom.name()
            loop.call_soon_threadsafe(callback, name, event, detail)

        callback_id = await self.call(
            lambda c: c.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_event, None
            )
        )
        self._callback_ids.append(callback_id)
        self._callbacks.append(callback)

    def is_alive(self) -> bool:
        """True while the connection is open and the keepalive has not failed."""
        return self._conn is not None and bool(self._conn.isAlive())

    async def close(self) -> None:
        """Close libvirt, the forward and the thread pool (idempotent)."""
        conn, self._conn = self._conn, None
        if conn is not None:

            def _close() -> None:
                for callback_id in self._callback_ids:
                    with contextlib.suppress(libvirt.libvirtError):
                        conn.domainEventDeregisterAny(callback_id)
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()

            await self._run(_close)
        self._callback_ids.clear()
        self._callbacks.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._executor.shutdown(wait=False)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
