"""The clone's block index: what lets a hash-mode sync skip reading the clone.

A hash-mode sync compares block digests of the source's and the clone's files. Reading and
hashing the clone costs as much as the source, so the destination keeps the digests next to the
clone (``.kvmclone-index-<file>.json``, in the same pool) together with the file's stamp (device,
inode, size, mtime and ctime in ns): the agent's ``receive --index`` writes it while a clone or
sync writes the file, ``hash --index`` answers from it only while the stamp still holds, else
hashes and saves a new one. Anything else that writes the file (the guest, a revert, a bitmap
sync through qemu-nbd, an operator) changes the stamp and so retires the index.

One writer of our own changes a clone after its receive: removing the bitmaps a qcow2 clone
copied from its source (``qemu-img bitmap --remove``). It rewrites qcow2 metadata only, so
:func:`around_metadata_change` renews the index by re-reading every block that is not wholly
inside a guest data cluster that stayed where it was (``qemu-img map`` before and after): a few
blocks instead of the file. Decision 17 in docs/decisions.md.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from kvm_clone_tui.engine.host_port import Host
from kvm_clone_tui.engine.remote_agent import RemoteAgent

INDEX_BLOCK_SIZE = 64 << 10  # the sync's block size: an index of another size is not used
T = TypeVar("T")
Ranges = list[tuple[int, int]]


@dataclass(frozen=True)
class Hashes:
    """A file's ``hash`` answer."""

    size: int
    blocks: list[str | None]
    index: str  # used / saved / none: what became of the file's block index
    stamp: tuple[int, ...]  # the file as it was hashed (``receive --expect-stamp``)
    answer: dict[str, Any]  # as the agent gave it (``send --against-stdin`` takes it)


async def file_hashes(
    agent: RemoteAgent,
    path: str,
    bs: int,
    algo: str,
    index_root: str | None = None,
    index_only: bool = False,
) -> Hashes:
    """Block digests of a file (with ``index_root``: from its block index when valid, else
    hashed and indexed; ``index_only``: from the index or ``blocks`` empty and ``index``
    "none")."""
    result = await agent.hash(
        path, block_size=bs, algo=algo, index_root=index_root, index_only=index_only
    )
    stamp = tuple(int(x) for x in result.get("stamp", ()))
    index = str(result.get("index", "none"))
    return Hashes(int(result["size"]), list(result["blocks"] or []), index, stamp, result)


async def qcow2_data_ranges(host: Host, path: str) -> Ranges:
    """Host (file) byte ranges of a qcow2 image's guest data clusters, merged and sorted."""
    argv = ["qemu-img", "map", "-U", "--output=json", "-f", "qcow2", path]
    return data_ranges((await host.run(argv, timeout=300)).stdout)


def data_ranges(qemu_img_map_json: str) -> Ranges:
    """The host ranges of the data clusters in ``qemu-img map --output=json``, merged."""
    found = sorted(
        (int(m["offset"]), int(m["length"]))
        for m in json.loads(qemu_img_map_json)
        if m.get("data") and m.get("offset") is not None
    )
    merged: Ranges = []
    for off, n in found:
        if merged and merged[-1][0] + merged[-1][1] >= off:
            end = max(merged[-1][0] + merged[-1][1], off + n)
            merged[-1] = (merged[-1][0], end - merged[-1][0])
        else:
            merged.append((off, n))
    return merged


def intersect(a: Ranges, b: Ranges) -> Ranges:
    """The byte ranges in both sorted, merged lists."""
    out: Ranges = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][0] + a[i][1], b[j][0] + b[j][1])
        if hi > lo:
            out.append((lo, hi - lo))
        if a[i][0] + a[i][1] < b[j][0] + b[j][1]:
            i += 1
        else:
            j += 1
    return out


async def around_metadata_change(
    host: Host, path: str, root: str, change: Callable[[], Awaitable[T]]
) -> T:
    """Run ``change`` (which rewrites only the qcow2 metadata of ``path``), then renew the
    file's index for what it became; an index that did not describe the file before is
    dropped instead."""
    agent = RemoteAgent(host)
    stat, before = await asyncio.gather(agent.stat([path]), qcow2_data_ranges(host, path))
    st = stat[path]
    if "error" in st:
        return await change()
    was = ",".join(str(st[k]) for k in ("dev", "ino", "size", "mtime_ns", "ctime_ns"))
    result = await change()
    kept = intersect(before, await qcow2_data_ranges(host, path))
    await agent.index_refresh(path, root=root, was=was, kept=kept)
    return result
