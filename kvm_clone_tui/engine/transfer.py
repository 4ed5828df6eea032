"""Moving one file (a disk image) from a host to another with the host agent.

Two routes:

- **direct**: the source host runs ``agent send | ssh DEST agent receive``; the data never
  passes through the operator's machine. The source authenticates with the operator's forwarded
  SSH agent and checks the destination's host key against a known_hosts file holding exactly
  the key the operator's own connection verified (pinned; never unchecked).
- **relay**: ``agent send`` on the source and ``agent receive`` on the destination, each over
  the operator's connection, with this process pumping bytes between them (constant memory).

Either way only allocated, non-zero data moves, and the receiver checks a hash of everything
the sender read against a hash of everything it wrote (see docs/agent.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import asyncssh

from kvm_clone_tui.agent.protocol import AgentFailure, ReceiveResult, parse_progress, parse_result
from kvm_clone_tui.api.errors import HostError
from kvm_clone_tui.api.plans import DirectEndpoint
from kvm_clone_tui.api.results import TransferResult
from kvm_clone_tui.api.validation import shell_quote_argv
from kvm_clone_tui.engine.block_index import INDEX_BLOCK_SIZE
from kvm_clone_tui.engine.host_port import Host
from kvm_clone_tui.engine.progress import DiskProgress, RateMeter, disk_progress
from kvm_clone_tui.engine.remote_agent import RemoteAgent, shared_digest
from kvm_clone_tui.engine.ssh import preferred_ciphers

CHANNEL_WINDOW = 32 << 20
#: The relay's receive window for the sender's data. OpenSSH's sshd holds up to a window of
#: unsent data in buffers that it grows by copy-and-zero (``recallocarray``): with 32 MiB the
#: source's sshd spent ~5x the CPU per byte it spends with 2-4 MiB (docs/benchmarks.md, Clone).
#: 4 MiB still carries 100 MiB/s over a 40 ms round trip.
RELAY_WINDOW = 4 << 20
PUMP_CHUNK = 4 << 20
PROGRESS_INTERVAL = 0.25


class TransferError(HostError):
    """A disk copy failed; ``kind`` says how (no-space, truncated, digest, timeout, ...)."""

    kind = "transfer"

    def __init__(self, host: str, message: str, kind: str = "transfer") -> None:
        super().__init__(host, message)
        self.kind = kind


class DirectRouteUnavailable(TransferError):
    """The source could not reach the destination by itself (falls back to relay)."""


@dataclass(frozen=True)
class FileTransfer:
    """One file to copy: where from, where to (a new file under ``dest_root``), how big."""

    label: str  # shown in progress, e.g. "vda"
    source_path: str
    dest_path: str
    dest_root: str
    size: int  # apparent size of the source file
    allocated: int  # bytes of data to move (for progress)
    nbd_socket: str | None = None  # read this NBD export (a backup's point in time) instead
    nbd_export: str | None = None
    ranges: tuple[tuple[int, int], ...] | None = None  # only these (offset, length): a sync
    inplace: bool = False  # update the existing destination file instead of creating it
    keep_partial: bool = False  # a failed receiver keeps what it wrote (a clone can resume)
    nbd_dirty: str | None = None  # send only what this dirty-bitmap context marks (bitmap sync)
    dest_nbd_socket: str | None = None  # write through this NBD export (a qcow2 clone) instead
    dest_nbd_export: str | None = None
    undo_path: str | None = None  # save what gets overwritten here first (sync --checkpoint)
    index: str | None = None  # keep the destination file's block index with this digest
    against: str | None = None  # the destination's `hash` answer: send what differs from it
    dest_stamp: tuple[int, ...] | None = None  # the destination must still be as compared

    def sender_input(self) -> bytes | None:
        """What the sender reads on stdin: the ranges to move, or the digests to compare."""
        if self.against is not None:
            return self.against.encode()
        return None if self.ranges is None else json.dumps(self.ranges).encode()


@dataclass(frozen=True)
class TransferOptions:
    """How to move the bytes."""

    direct: DirectEndpoint | None = None  # None: relay through this process
    compress: bool = False
    bandwidth_limit: int | None = None  # bytes per second
    verify: bool = True
    no_progress_timeout: float = 120.0
    connect_timeout: float = 10.0
    digest: str = "blake2b"  # the stream digest; copy_file picks sha256 where both hash it fast


ProgressCallback = Callable[[DiskProgress], None]


def _send_args(item: FileTransfer, options: TransferOptions) -> list[str]:
    if item.nbd_socket is not None:
        args = ["nbd-send", item.nbd_socket, "--export", item.nbd_export or item.label]
    else:
        args = ["send", item.source_path]
    if options.bandwidth_limit:
        args += ["--bwlimit", str(options.bandwidth_limit)]
    if not options.verify:
        args.append("--no-hash")
    elif options.digest != "blake2b":
        args += ["--digest", options.digest]
    if item.against is not None:
        args.append("--against-stdin")
    elif item.ranges is not None:
        args.append("--ranges-stdin")
    if item.nbd_dirty is not None:
        args += ["--dirty", item.nbd_dirty]
    return args


def _receive_args(item: FileTransfer, options: TransferOptions) -> list[str]:
    if item.dest_nbd_socket is not None:
        args = ["nbd-receive", item.dest_nbd_socket, "--export", item.dest_nbd_export or ""]
        args += ["--size", str(item.size)]
    else:
        args = ["receive", item.dest_path, "--root", item.dest_root, "--size", str(item.size)]
    if item.undo_path is not None:
        args += ["--undo", item.undo_path]
        if item.dest_nbd_socket is not None:
            args += ["--root", item.dest_root]
    if not options.verify:
        args.append("--no-verify")
    if item.index is not None and item.dest_nbd_socket is None:
        args += ["--index", item.index, "--index-block-size", str(INDEX_BLOCK_SIZE)]
    if item.inplace and item.dest_nbd_socket is None:
        args.append("--inplace")
        if item.dest_stamp is not None:
            args += ["--expect-stamp", ",".join(map(str, item.dest_stamp))]
    elif item.keep_partial and item.dest_nbd_socket is None:
        args.append("--keep-partial")
    return args


def _direct_script(
    send: list[str], receive: list[str], endpoint: DirectEndpoint, options: TransferOptions
) -> str:
    """The shell script the source host runs for a direct copy (every word quoted)."""
    remote = shell_quote_argv(receive)
    if options.compress:
        remote = f"zstd -d -q -c | {remote}"
    ssh = [
        "ssh",
        "-F",
        "/dev/null",
        "-T",
        "-x",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "HostKeyAlias=kvm-clone-destination",
        "-o",
        f"ConnectTimeout={int(options.connect_timeout)}",
        "-o",
        "ServerAliveInterval=15",
        "-o",
        f"Ciphers={','.join(preferred_ciphers())}",
        "-p",
        str(endpoint.port),
        "-l",
        endpoint.user,
    ]
    pipeline = shell_quote_argv(send)
    if options.compress:
        pipeline += " | zstd -1 -T0 -q -c"
    known = shell_quote_argv([f"kvm-clone-destination {endpoint.host_key}"])
    return (
        "kh=$(mktemp) || exit 97\n"
        "trap 'rm -f \"$kh\"' EXIT\n"
        f'printf "%s\\n" {known} > "$kh"\n'
        f'{pipeline} | {shell_quote_argv(ssh)} -o UserKnownHostsFile="$kh" -- '
        f"{shell_quote_argv([endpoint.address])} {shell_quote_argv([remote])}\n"
    )


def _feed(proc: asyncssh.SSHClientProcess[bytes], item: FileTransfer) -> None:
    """Give the sender its ranges (and end its stdin)."""
    data = item.sender_input()
    if data is not None:
        proc.stdin.write(data)
    proc.stdin.write_eof()


class _Watch:
    """Parses the sender's stderr: progress lines feed the callback, the rest is kept."""

    def __init__(self, item: FileTransfer, on_progress: ProgressCallback) -> None:
        self.item = item
        self.on_progress = on_progress
        self.meter = RateMeter()
        self.done = 0
        self.last_change = time.monotonic()
        self.other: list[str] = []
        self.sender_digest: str | None = None

    async def consume(self, stream: asyncssh.SSHReader[bytes]) -> None:
        # Read in chunks, not lines: while the channel is paused (a slow receiver), asyncssh's
        # line reader returns empty lines at once, a busy loop that starves the event loop.
        pending = b""
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                self._line(raw)
        if pending:
            self._line(pending)

    def _line(self, raw: bytes) -> None:
        """One stderr line: progress, the sender's summary, or a message kept for errors."""
        line = raw.decode(errors="replace").strip()
        progress = parse_progress(line)
        if progress is None:
            if line.startswith('{"done"'):
                with contextlib.suppress(ValueError, AttributeError):
                    self.sender_digest = str(json.loads(line).get("digest", ""))
            elif line:
                self.other.append(line)
            return
        if progress.done != self.done:
            self.done = progress.done
            self.last_change = time.monotonic()
        total = max(progress.total, self.item.allocated, progress.done)
        self.on_progress(disk_progress(self.item.label, progress.done, total, self.meter))

    def stalled_for(self) -> float:
        return time.monotonic() - self.last_change

    def errors(self) -> str:
        return "; ".join(self.other[-5:])


async def _watchdog(watch: _Watch, timeout: float, host: str) -> None:
    while True:
        await asyncio.sleep(min(1.0, timeout / 4))
        if watch.stalled_for() > timeout:
            raise TransferError(host, f"no progress for {timeout:.0f} s: aborted", "timeout")


def _result(host: str, stdout: str, label: str) -> ReceiveResult:
    try:
        return ReceiveResult.from_json(parse_result(stdout))
    except AgentFailure as exc:
        kind = exc.kind
        message = str(exc)
        if kind == "no-space":
            message = f"destination storage is full while writing {exc.path or label}: {exc}"
        raise TransferError(host, message, kind) from exc


async def _run_direct(
    src: Host,
    src_agent: RemoteAgent,
    dst_agent: RemoteAgent,
    item: FileTransfer,
    options: TransferOptions,
    watch: _Watch,
) -> str:
    assert options.direct is not None
    send = await src_agent.argv(_send_args(item, options))
    receive = await dst_agent.argv(_receive_args(item, options))
    script = _direct_script(send, receive, options.direct, options)
    proc = await src.open_process(["sh", "-c", script], window=CHANNEL_WINDOW)
    _feed(proc, item)
    try:
        stderr_task = asyncio.ensure_future(watch.consume(proc.stderr))
        stdout = await proc.stdout.read()
        await stderr_task
        await proc.wait()
    finally:
        proc.close()
    text = bytes(stdout).decode(errors="replace")
    if proc.exit_status == 255 and not text.strip():
        raise DirectRouteUnavailable(
            src.name,
            f"{src.name} could not reach the destination over SSH: "
            f"{watch.errors() or 'ssh exited 255'}",
            "direct-unavailable",
        )
    if not text.strip() and watch.other:
        raise TransferError(src.name, f"copy of {item.label} failed: {watch.errors()}")
    return text


async def _run_relay(
    src: Host,
    src_agent: RemoteAgent,
    dst: Host,
    dst_agent: RemoteAgent,
    item: FileTransfer,
    options: TransferOptions,
    watch: _Watch,
) -> str:
    send = await src_agent.argv(_send_args(item, options))
    receive = await dst_agent.argv(_receive_args(item, options))
    sender = await src.open_process(send, window=RELAY_WINDOW)
    _feed(sender, item)
    receiver = await dst.open_process(receive)

    async def pump() -> None:
        while True:
            chunk = await sender.stdout.read(PUMP_CHUNK)
            if not chunk:
                break
            receiver.stdin.write(chunk)
            await receiver.stdin.drain()
        receiver.stdin.write_eof()

    try:
        stderr_task = asyncio.ensure_future(watch.consume(sender.stderr))
        pump_task = asyncio.ensure_future(pump())
        stdout = await receiver.stdout.read()
        await receiver.wait()
        if receiver.exit_status != 0:
            # The receiver stopped first and its own result says why. The sender may still be
            # running, or have exited with output the pump no longer reads and that holds its
            # stderr's end back: stop it rather than wait for either.
            sender.close()
        with contextlib.suppress(BrokenPipeError, ConnectionError, asyncssh.Error):
            await pump_task
        await stderr_task
        await sender.wait()
    finally:
        for proc in (sender, receiver):
            proc.close()
    return bytes(stdout).decode(errors="replace")


async def copy_file(
    src: Host,
    src_agent: RemoteAgent,
    dst: Host,
    dst_agent: RemoteAgent,
    item: FileTransfer,
    options: TransferOptions,
    on_progress: ProgressCallback,
) -> TransferResult:
    """Copy one file; raises TransferError (DirectRouteUnavailable for a direct failure)."""
    if options.verify:
        options = replace(options, digest=await shared_digest(src_agent, dst_agent))
    watch = _Watch(item, on_progress)
    started = time.monotonic()
    route = "direct" if options.direct is not None else "relay"
    if route == "direct":
        work: Any = _run_direct(src, src_agent, dst_agent, item, options, watch)
    else:
        work = _run_relay(src, src_agent, dst, dst_agent, item, options, watch)
    copy = asyncio.ensure_future(work)
    dog = asyncio.ensure_future(_watchdog(watch, options.no_progress_timeout, src.name))
    try:
        done, _ = await asyncio.wait({copy, dog}, return_when=asyncio.FIRST_COMPLETED)
        if dog in done:
            copy.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await copy
            dog.result()  # raises the timeout
        try:
            stdout: str = copy.result()
        except (asyncssh.Error, OSError) as exc:
            raise TransferError(
                src.name if route == "direct" else f"{src.name}/{dst.name}",
                f"copy of {item.label} lost its SSH connection: {exc}",
                "connection",
            ) from exc
    finally:
        for task in (copy, dog):
            task.cancel()
    result = _result(dst.name, stdout, item.label)
    if options.verify and watch.sender_digest is not None and watch.sender_digest != result.digest:
        raise TransferError(
            dst.name,
            f"{item.label}: the sender read {watch.sender_digest} but "
            f"the receiver wrote {result.digest}",
            "digest-mismatch",
        )
    final = max(item.allocated, watch.done)  # a bitmap sync learns its total from the sender
    on_progress(disk_progress(item.label, final, final, watch.meter, True))
    return TransferResult(
        label=item.label,
        route=route,
        bytes_written=result.bytes_written,
        digest=result.digest,
        verified=options.verify,
        seconds=time.monotonic() - started,
        zero_bytes=result.zero_bytes,
    )
