"""The receiving end: ``receive`` (a stream from stdin into a new file under ``--root``, or in
place) and ``nbd-receive`` (into a writable NBD export); the checks on every frame.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import signal
import stat
from typing import Any, NoReturn

from .hashing import StreamHash
from .index import BlockIndex, drop_index, file_stamp, load_index, save_index
from .nbd import NBDClient
from .paths import _unlink_same, check_path, open_parent
from .sinks import FileSink, NBDSink
from .undo import UndoLog
from .wire import (
    _CLOEXEC,
    BLOCK_STRUCT,
    DIGESTS,
    END_STRUCT,
    FRAME_DATA,
    FRAME_END,
    FRAME_HEADER,
    FRAME_ZERO,
    HEADER_STRUCT,
    MAGIC,
    MAX_BLOCK_SIZE,
    MAX_JSON,
    MIN_BLOCK_SIZE,
    WRITEBACK,
    AgentError,
    Progress,
    emit,
    enlarge_pipe,
    os_error,
)


class Receiver:
    """Writes a stream from stdin into a sink; ``good``: everything below it is final."""

    def __init__(
        self,
        sink: Any,
        args: argparse.Namespace,
        undo: UndoLog | None = None,
        index: Any = None,
    ) -> None:
        self.sink, self.args, self.undo, self.good, self.got = sink, args, undo, 0, 0
        self.index = index  # a callable (size, start) -> BlockIndex | None, once the header says
        self.blocks: BlockIndex | None = None
        self.inp = io.BufferedReader(io.FileIO(0, "rb", closefd=False), 1 << 18)

    def read_into(self, mv: memoryview) -> None:
        done = 0
        while done < len(mv):
            n = self.inp.readinto(mv[done:])
            if not n:
                raise AgentError("truncated", f"stream ended after {self.got + done} bytes")
            done += n
        self.got += done

    def read(self, n: int) -> bytes:
        buf = bytearray(n)
        self.read_into(memoryview(buf))
        return bytes(buf)

    def read_json(self, n: int) -> dict[str, Any]:
        try:
            obj = json.loads(self.read(n)) if n <= MAX_JSON else None
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            raise AgentError("protocol", "bad JSON in a HEADER or END frame")
        return obj

    def run(self) -> dict[str, Any]:
        args, sink, undo = self.args, self.sink, self.undo
        ftype, magic, n = HEADER_STRUCT.unpack(self.read(HEADER_STRUCT.size))
        if ftype != FRAME_HEADER or magic != MAGIC:
            raise AgentError("protocol", "not a kvm-clone stream (bad magic)")
        meta = self.read_json(n)
        try:
            size, bs, start = (int(meta[k]) for k in ("size", "block_size", "start_offset"))
        except (KeyError, TypeError, ValueError):
            raise AgentError("protocol", f"bad header {meta}") from None
        if size != args.size or not MIN_BLOCK_SIZE <= bs <= MAX_BLOCK_SIZE:
            raise AgentError("protocol", f"header {meta} does not match --size {args.size}")
        if not 0 <= start <= size or (start and not args.resume):
            raise AgentError("protocol", f"start offset {start} needs --resume and <= size")
        sink.start(start)
        self.good = start
        blocks = self.blocks = self.index(size, start) if self.index is not None else None
        views = [memoryview(bytearray(bs)), memoryview(bytearray(bs))]
        cur, written, zeros, flushed = 0, 0, 0, start
        algo = str(meta.get("digest", "blake2b"))
        if algo not in DIGESTS:
            raise AgentError("protocol", f"unknown stream digest {algo!r}")
        hasher = None if args.no_verify else StreamHash(algo)
        progress = Progress(int(meta.get("total", 0)))
        while True:
            ftype = self.read(1)[0]
            if ftype == FRAME_END:
                end = self.read_json(END_STRUCT.unpack(bytes([ftype]) + self.read(4))[1])
                break
            if ftype not in (FRAME_DATA, FRAME_ZERO):
                raise AgentError("protocol", f"unknown frame type {ftype:#x} at byte {self.got}")
            head = self.read(BLOCK_STRUCT.size - 1)
            _, off, n = BLOCK_STRUCT.unpack(bytes([ftype]) + head)
            if not 0 < n <= bs or off < self.good or off + n > size:
                raise AgentError("protocol", f"bad frame: offset {off} length {n} (size {size})")
            if ftype == FRAME_DATA:
                mv = views[cur][:n]
                self.read_into(mv)
                if hasher is not None:  # hashed while this thread writes it and reads on
                    then = None if blocks is None else functools.partial(blocks.data, off, mv)
                    hasher.submit(head, mv, then)
                elif blocks is not None:
                    blocks.data(off, mv)
                if undo is not None:
                    undo.save(off, n)
                sink.write(off, mv)
                written, cur = written + n, cur ^ 1
            else:
                if undo is not None and sink.inplace:
                    undo.save(off, n)
                sink.zero(off, n)
                zeros += n
                if blocks is not None:
                    blocks.zeros(off, n)
            self.good = off + n
            if self.good - flushed >= WRITEBACK:
                sink.written_up_to(max(start, flushed - WRITEBACK), self.good)
                flushed = self.good
            progress.update(written + zeros)
        digest = hasher.hexdigest() if hasher is not None else ""
        if end.get("bytes_sent") != written:
            raise AgentError("digest-mismatch", f"wrote {written} bytes, the sender sent {end}")
        if hasher is not None and end.get("digest") != digest:
            raise AgentError("digest-mismatch", f"digest {digest} != sender's {end.get('digest')}")
        if args.expect_digest and args.expect_digest.lower() != digest:
            raise AgentError("digest-mismatch", f"digest {digest} != expected {args.expect_digest}")
        sink.finish(size)
        out = dict(ok=True, path=args.dest, size=size, start_offset=start, bytes_written=written)
        out.update(zero_bytes=zeros, digest=digest, end_digest_match=hasher is not None)
        if undo is not None:
            out.update(undo=undo.path, undo_bytes=undo.saved, old_size=undo.old_size)
        return dict(out, expected_digest_match=True if args.expect_digest else None)


def _interrupted(signum: int, _frame: object) -> NoReturn:
    raise AgentError("interrupted", f"stopped by signal {signum}")


def cmd_receive(args: argparse.Namespace) -> int:
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _interrupted)
    dest, keep = args.dest, args.keep_partial or args.resume or args.inplace
    dfd, name = open_parent(args.root, dest)
    fd, created, ident, receiver = -1, False, (0, 0), None
    try:
        try:
            if args.resume or args.inplace:  # O_NONBLOCK: a planted FIFO must not hang us
                flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
                fd = os.open(name, flags, dir_fd=dfd)
            else:
                access = os.O_RDWR if args.index else os.O_WRONLY  # the index reads back
                flags = access | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
                fd, created = os.open(name, flags, args.mode, dir_fd=dfd), True
            st = os.fstat(fd)
            ident = (st.st_dev, st.st_ino)
            if not stat.S_ISREG(st.st_mode):
                raise AgentError("path", f"not a regular file: {dest}", dest)
            if args.expect_stamp and args.expect_stamp != ",".join(map(str, file_stamp(st))):
                msg = f"{dest} changed since it was compared with the source: sync again"
                raise AgentError("changed", msg, dest)
            enlarge_pipe(0)
            sink = FileSink(fd, args.inplace)
            if args.undo and not args.inplace:
                raise AgentError("usage", "--undo needs --inplace")
            undo = UndoLog(args.root, args.undo, sink) if args.undo else None
            index = _index_factory(args, dfd, name, file_stamp(st)) if args.index else None
            receiver = Receiver(sink, args, undo, index)
            try:
                result = receiver.run()
            finally:
                if undo is not None:
                    undo.close()  # kept even after a failure: what was overwritten is in it
            os.fsync(fd)
            result["allocated"] = os.fstat(fd).st_blocks * 512
            if args.index:
                result["index"] = "none"
                if receiver.blocks is None:
                    drop_index(dfd, name)
                else:
                    digests = receiver.blocks.finish(fd)
                    saved = save_index(dfd, name, os.fstat(fd), *_index_kind(args), digests)
                    result["index"] = "saved" if saved else "none"
            os.close(fd)
            fd = -1
            os.fsync(dfd)
        except OSError as exc:
            raise os_error(exc, dest) from None
        except AgentError:
            raise
        except Exception as exc:  # a bug: still clean up
            raise AgentError("internal", f"{type(exc).__name__}: {exc}") from exc
    except AgentError as exc:
        exc.path = exc.path or dest
        if fd >= 0:
            if keep and receiver is not None and exc.kind != "digest-mismatch":
                try:
                    os.fsync(fd)
                    exc.extra["resume_offset"] = receiver.good
                except OSError:
                    pass
            os.close(fd)
        exc.extra["removed"] = created and not keep and _unlink_same(dfd, name, ident)
        if args.index:
            drop_index(dfd, name)
        raise
    finally:
        os.close(dfd)
    emit(result)
    return 0


def _index_kind(args: argparse.Namespace) -> tuple[int, str]:
    return args.index_block_size, args.index


def _index_factory(args: argparse.Namespace, dfd: int, name: str, stamp: list[int]) -> Any:
    """What ``Receiver`` calls with the stream's size and start to get the file's index: for a
    new file all holes; for ``--inplace`` the saved index, if it still describes the file;
    None (no index) for a resumed file or a stale index."""
    bs, algo = _index_kind(args)

    def make(size: int, start: int) -> BlockIndex | None:
        if start:
            return None
        if not args.inplace:
            return BlockIndex(algo, bs, [], size, size)
        found = load_index(dfd, name, stamp, bs, algo)
        return None if found is None else BlockIndex(algo, bs, found["blocks"], stamp[2], size)

    return make


def cmd_nbd_receive(args: argparse.Namespace) -> int:
    """Like ``receive --inplace``, writing into a writable NBD export instead of a file."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _interrupted)
    check_path(args.socket, "socket")
    client = NBDClient(args.socket, args.export, [])
    undo = None
    try:
        sink = NBDSink(client)
        if args.undo:
            if not args.root:
                raise AgentError("usage", "--undo needs --root")
            undo = UndoLog(args.root, args.undo, sink)
        enlarge_pipe(0)
        args.dest, args.inplace, args.resume, args.expect_digest = args.socket, True, False, None
        result = Receiver(sink, args, undo).run()
    finally:
        if undo is not None:
            undo.close()
        client.close()
    emit(result)
    return 0
