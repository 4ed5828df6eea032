"""kvm-clone host agent: probe a host; list extents, send, receive and hash VM disks.

Standard library only, Python 3.8+: the client ships it to each host as a zipapp and runs it
with the host's python3. Protocol, hash definition and shipping: docs/agent.md.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from typing import Any, NoReturn

from .version import agent_version
from .wire import (
    DEFAULT_BLOCK_SIZE,
    DIGEST_SIZE,
    DIGESTS,
    MAX_BLOCK_SIZE,
    MIN_BLOCK_SIZE,
    AgentError,
    emit,
    os_error,
)

_ERRORS_TO_STDERR = False  # True for `send`, whose stdout is the stream


def parse_size(text: str) -> int:
    """``4194304``, ``4M``, ``4MiB``, ``512k`` -> bytes (binary units)."""
    m = re.fullmatch(r"(\d+)([kmgt]?)(i?b)?", text.strip().lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(m.group(1)) << (10 * " kmgt".index(m.group(2) or " "))


def block_size(text: str) -> int:
    n = parse_size(text)
    if n % MIN_BLOCK_SIZE or not MIN_BLOCK_SIZE <= n <= MAX_BLOCK_SIZE:
        raise argparse.ArgumentTypeError(f"not a multiple of 4 KiB up to 64 MiB: {text!r}")
    return n


def digest_hex(text: str) -> str:
    if not re.fullmatch(f"[0-9a-f]{{{2 * DIGEST_SIZE}}}", text.lower()):
        raise argparse.ArgumentTypeError(f"not a {DIGEST_SIZE}-byte hex digest: {text!r}")
    return text


class Parser(argparse.ArgumentParser):
    """Usage errors as JSON lines too."""

    def error(self, message: str) -> NoReturn:
        emit({"error": message, "kind": "usage"}, err=_ERRORS_TO_STDERR)
        sys.exit(2)


# Over 80 lines on purpose: a declarative list of every subcommand's options, one after another.
def build_parser() -> Parser:
    p = Parser(prog="kvm-clone-agent", description=__doc__)
    p.add_argument("--version", action="version", version=agent_version())
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    c = sub.add_parser("probe", help="versions, tools, free space, hole support (JSON)")
    c.add_argument("--path", action="append", default=[], help="a directory (repeatable)")
    c.set_defaults(func="probe:cmd_probe")
    c = sub.add_parser("extents", help="size, allocation and data extents of a file (JSON)")
    c.add_argument("path")
    c.set_defaults(func="extents:cmd_extents")
    c = sub.add_parser("send", help="write a file as a framed stream to stdout")
    c.add_argument("path")
    c.add_argument("--block-size", type=block_size, default=DEFAULT_BLOCK_SIZE)
    c.add_argument("--bwlimit", type=parse_size, default=0, help="bytes per second")
    c.add_argument("--start-offset", type=parse_size, default=0, help="resume from here")
    c.add_argument("--no-hash", action="store_true", help="send no digest (--no-verify)")
    c.add_argument("--digest", choices=DIGESTS, default="blake2b", help="the stream digest")
    c.add_argument(
        "--ranges-stdin",
        action="store_true",
        help="send only the [offset, length] ranges of a JSON list read from stdin",
    )
    c.add_argument(
        "--against-stdin",
        action="store_true",
        help="send only the blocks whose digest differs from the destination's `hash` answer "
        "read from stdin (its block size and digest)",
    )
    c.set_defaults(func="send:cmd_send")
    c = sub.add_parser("nbd-send", help="like send, reading an NBD export on a unix socket")
    c.add_argument("socket")
    c.add_argument("--export", required=True)
    c.add_argument("--block-size", type=block_size, default=DEFAULT_BLOCK_SIZE)
    c.add_argument("--bwlimit", type=parse_size, default=0, help="bytes per second")
    c.add_argument("--start-offset", type=parse_size, default=0, help="resume from here")
    c.add_argument("--no-hash", action="store_true", help="send no digest (--no-verify)")
    c.add_argument("--digest", choices=DIGESTS, default="blake2b", help="the stream digest")
    c.add_argument(
        "--dirty",
        metavar="CONTEXT",
        help="send only the blocks this dirty-bitmap meta context marks "
        "(e.g. qemu:dirty-bitmap:backup-vda); holes there are sent as zeros",
    )
    c.set_defaults(func="nbd:cmd_nbd_send")
    c = sub.add_parser("receive", help="write a stream from stdin to a new file under --root")
    c.add_argument("dest")
    c.add_argument("--root", required=True)
    c.add_argument("--size", type=int, required=True)
    c.add_argument("--expect-digest", type=digest_hex)
    c.add_argument("--no-verify", action="store_true", help="no hashing (sender: --no-hash)")
    c.add_argument("--keep-partial", action="store_true", help="keep DEST on failure")
    c.add_argument("--resume", action="store_true", help="continue an existing DEST")
    c.add_argument(
        "--inplace",
        action="store_true",
        help="update an existing DEST: write DATA frames, zero ZERO frames, keep "
        "the rest; DEST is never removed",
    )
    c.add_argument("--mode", type=lambda s: int(s, 8), default=0o600, help="of a new DEST")
    c.add_argument(
        "--undo", metavar="FILE", help="with --inplace: save what gets overwritten in FILE (new)"
    )
    c.add_argument(
        "--index",
        choices=DIGESTS,
        help="keep DEST's block index (for `hash --index`) with this digest; with --inplace "
        "only when DEST's saved index still describes it",
    )
    c.add_argument("--index-block-size", type=block_size, default=64 << 10)
    c.add_argument(
        "--expect-stamp",
        metavar="DEV,INO,SIZE,MTIME,CTIME",
        help="with --inplace: refuse unless DEST is still as `hash` saw it (its `stamp`)",
    )
    c.set_defaults(func="receive:cmd_receive")
    c = sub.add_parser("nbd-receive", help="like receive --inplace, into a writable NBD export")
    c.add_argument("socket")
    c.add_argument("--export", required=True)
    c.add_argument("--size", type=int, required=True)
    c.add_argument("--no-verify", action="store_true", help="no hashing (sender: --no-hash)")
    c.add_argument("--undo", metavar="FILE", help="save what gets overwritten in FILE (new)")
    c.add_argument("--root", help="the directory --undo must lie in")
    c.set_defaults(func="receive:cmd_nbd_receive")
    c = sub.add_parser("undo-apply", help="put back what an undo log saved")
    c.add_argument("undo")
    c.add_argument("--root", required=True, help="the directory UNDO (and TARGET) lie in")
    c.add_argument("--target", help="the file to restore")
    c.add_argument("--nbd", metavar="SOCKET", help="restore through this NBD export instead")
    c.add_argument("--export", default="")
    c.set_defaults(func="undo:cmd_undo_apply")
    c = sub.add_parser("put", help="write stdin (<= 1 MiB) to a new file under --root")
    c.add_argument("path")
    c.add_argument("--root", required=True)
    c.add_argument("--replace", action="store_true", help="atomically replace an existing file")
    c.set_defaults(func="fsops:cmd_put")
    c = sub.add_parser("stat", help="size, mtime/ctime (ns) and inode of files (JSON)")
    c.add_argument("path", nargs="+")
    c.set_defaults(func="fsops:cmd_stat")
    c = sub.add_parser("hash", help="a 16-byte digest of each block; null: reads as zeros (JSON)")
    c.add_argument("path")
    c.add_argument("--block-size", type=block_size, default=DEFAULT_BLOCK_SIZE)
    c.add_argument("--algo", choices=DIGESTS, default="blake2b", help="blake2b-16 or sha256/128")
    c.add_argument(
        "--index",
        action="store_true",
        help="answer from PATH's saved block index when it still describes PATH; else hash "
        "and save one (needs --root)",
    )
    c.add_argument("--root", help="with --index: the directory PATH and its index lie in")
    c.add_argument(
        "--index-only",
        action="store_true",
        help="with --index: answer from the index or not at all (blocks: null), never hash",
    )
    c.set_defaults(func="index:cmd_hash")
    c = sub.add_parser(
        "index-refresh",
        help="renew PATH's block index after a change of its qcow2 metadata only (stdin: the "
        "host ranges of data clusters the change kept)",
    )
    c.add_argument("path")
    c.add_argument("--root", required=True)
    c.add_argument("--was", required=True, help="PATH's stamp before: dev,ino,size,mtime,ctime")
    c.set_defaults(func="index:cmd_index_refresh")
    c = sub.add_parser("rename", help="rename a file within --root")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--root", required=True)
    c.add_argument("--replace", action="store_true", help="replace an existing DST")
    c.set_defaults(func="fsops:cmd_rename")
    c = sub.add_parser("remove", help="remove a regular file within --root")
    c.add_argument("path")
    c.add_argument("--root", required=True)
    c.add_argument("--missing-ok", action="store_true")
    c.set_defaults(func="fsops:cmd_remove")
    c = sub.add_parser("resolve", help="kind, target and symlink-ness of paths (JSON)")
    c.add_argument("path", nargs="+")
    c.set_defaults(func="fsops:cmd_resolve")
    c = sub.add_parser("tpm-pack", help="a TPM state directory as JSON (files base64)")
    c.add_argument("path")
    c.add_argument("--summary", action="store_true", help="size and digest, not the files")
    c.set_defaults(func="tpm:cmd_tpm_pack")
    c = sub.add_parser("tpm-unpack", help="write a tpm-pack answer (stdin) as a new directory")
    c.add_argument("path")
    c.set_defaults(func="tpm:cmd_tpm_unpack")
    c = sub.add_parser("tpm-commit", help="rename a staged TPM state to its final name")
    c.add_argument("staging")
    c.add_argument("final")
    c.set_defaults(func="tpm:cmd_tpm_commit")
    c = sub.add_parser("tpm-remove", help="remove TPM state directories")
    c.add_argument("path", nargs="+")
    c.set_defaults(func="tpm:cmd_tpm_remove")
    return p


def command(where: str) -> Any:
    """The function ``module:name`` of this package, imported only now: a run loads the code
    of its own command and what that uses, not every command's (start-up time)."""
    module, name = where.split(":")
    return getattr(importlib.import_module("." + module, __package__), name)


def main(argv: list[str] | None = None) -> int:
    global _ERRORS_TO_STDERR
    argv = sys.argv[1:] if argv is None else argv
    _ERRORS_TO_STDERR = argv[:1] in (["send"], ["nbd-send"])
    args = build_parser().parse_args(argv)
    try:
        return int(command(args.func)(args))
    except AgentError as exc:
        emit(exc.as_json(), err=_ERRORS_TO_STDERR)
    except OSError as exc:
        emit(os_error(exc, getattr(args, "path", None)).as_json(), err=_ERRORS_TO_STDERR)
    return 1
