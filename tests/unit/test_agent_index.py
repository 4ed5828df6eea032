"""The agent's block index: kept by ``receive --index``, answered by ``hash --index``, moved by
``rename``, renewed by ``index-refresh``; never trusted once the file changed (docs/agent.md).

Every test compares what the index says with a plain ``hash`` of the file as it is: an index
that drifted from the file's bytes fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kvm_clone_tui.engine.block_index import data_ranges, intersect
from tests.unit.test_agent import AGENT, MiB, make_sparse, receive, root, run, send, src

__all__ = ["root", "src"]  # fixtures shared with test_agent.py

IBS = 64 << 10
PY = sys.executable


def hash_answer(path: Path) -> dict[str, Any]:
    """The agent's ``hash`` of ``path`` (64 KiB blocks, sha256), never from an index."""
    rc, out, err = run(PY, "hash", str(path), "--block-size", str(IBS), "--algo", "sha256")
    assert rc == 0, err
    return out


def plain_hash(path: Path) -> list[Any]:
    return list(hash_answer(path)["blocks"])


def index_hash(path: Path) -> dict[str, Any]:
    args = ["hash", str(path), "--block-size", str(IBS), "--algo", "sha256", "--index"]
    rc, out, err = run(PY, *args, "--root", str(path.parent))
    assert rc == 0, err
    return out


def index_file(path: Path) -> Path:
    return path.parent / f".kvmclone-index-{path.name}.json"


def clone_with_index(src: Path, dest: Path) -> dict[str, Any]:
    stream = send(PY, src, "--digest", "sha256")
    rc, out = receive(PY, dest, dest.parent, src.stat().st_size, stream, "--index", "sha256")
    assert rc == 0, out
    return out


def test_receive_keeps_an_index_that_hash_then_answers_from(src: Path, root: Path) -> None:
    dest = root / "clone.img"
    out = clone_with_index(src, dest)
    assert out["index"] == "saved" and index_file(dest).exists()
    answer = index_hash(dest)
    assert answer["index"] == "used"
    assert answer["blocks"] == plain_hash(dest) == plain_hash(src)


def test_a_changed_file_is_hashed_again_never_answered_from_a_stale_index(
    src: Path, root: Path
) -> None:
    dest = root / "clone.img"
    clone_with_index(src, dest)
    with dest.open("r+b") as f:  # same size, same data layout: only the bytes differ
        f.seek(2 * MiB + 5)
        f.write(b"changed")
    answer = index_hash(dest)
    assert answer["index"] == "saved"  # hashed afresh, and saved for next time
    assert answer["blocks"] == plain_hash(dest) != plain_hash(src)
    assert index_hash(dest)["index"] == "used"


def test_inplace_receive_updates_the_index_for_ranges_and_a_size_change(
    src: Path, root: Path
) -> None:
    dest = root / "clone.img"
    clone_with_index(src, dest)
    # the source changes: new bytes in the middle of a block, a block becomes zeros, it grows
    with src.open("r+b") as f:
        f.seek(2 * MiB + 1000)
        f.write(os.urandom(70_000))
        f.seek(4 * MiB)
        f.write(bytes(IBS))
        f.truncate(src.stat().st_size + 100_001)
        f.seek(src.stat().st_size - 10)
        f.write(b"0123456789")
    size = src.stat().st_size
    ranges = [[2 * MiB, 2 * IBS], [4 * MiB, IBS], [16 * MiB, size - 16 * MiB]]
    stream = subprocess.run(
        [PY, str(AGENT), "send", str(src), "--digest", "sha256", "--ranges-stdin"],
        input=json.dumps(ranges).encode(),
        capture_output=True,
        check=True,
    ).stdout
    rc, out = receive(PY, dest, root, size, stream, "--inplace", "--index", "sha256")
    assert rc == 0, out
    assert out["index"] == "saved"
    answer = index_hash(dest)
    assert answer["index"] == "used"
    assert answer["blocks"] == plain_hash(dest) == plain_hash(src)


def test_inplace_receive_without_a_valid_index_keeps_none(src: Path, root: Path) -> None:
    dest = root / "clone.img"
    shutil.copyfile(src, dest)
    size = src.stat().st_size
    stream = subprocess.run(
        [PY, str(AGENT), "send", str(src), "--ranges-stdin"],
        input=json.dumps([[0, IBS]]).encode(),
        capture_output=True,
        check=True,
    ).stdout
    rc, out = receive(PY, dest, root, size, stream, "--inplace", "--index", "sha256")
    assert rc == 0 and out["index"] == "none"
    assert not index_file(dest).exists()


def test_a_failed_receive_leaves_no_index(src: Path, root: Path) -> None:
    dest = root / "clone.img"
    stream = send(PY, src)
    rc, out = receive(PY, dest, root, src.stat().st_size, stream[:-200], "--index", "sha256")
    assert rc == 1 and out["kind"] == "truncated"
    assert not index_file(dest).exists()


def test_rename_moves_the_index_and_remove_drops_it(src: Path, root: Path) -> None:
    staged, final = root / ".kvmclone-partial-job-disk.img", root / "disk.img"
    clone_with_index(src, staged)
    rc, _, err = run(PY, "rename", str(staged), str(final), "--root", str(root))
    assert rc == 0, err
    assert not index_file(staged).exists() and index_file(final).exists()
    assert index_hash(final)["index"] == "used"
    rc, _, err = run(PY, "remove", str(final), "--root", str(root))
    assert rc == 0, err
    assert not index_file(final).exists()


def test_a_forged_or_damaged_index_is_ignored(src: Path, root: Path) -> None:
    dest = root / "clone.img"
    clone_with_index(src, dest)
    data = json.loads(index_file(dest).read_text())
    data["blocks"][0] = "f" * 31  # not a digest
    index_file(dest).write_text(json.dumps(data))
    assert index_hash(dest)["index"] == "saved"
    index_file(dest).write_text("{not json")
    assert index_hash(dest)["blocks"] == plain_hash(src)


def test_a_symlink_named_like_the_file_gets_no_index(src: Path, root: Path) -> None:
    link = root / "link.img"
    link.symlink_to(src)
    assert index_hash(link)["index"] == "none"
    assert not index_file(link).exists()


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_index_refresh_after_a_bitmap_is_removed_matches_a_full_hash(tmp_path: Path) -> None:
    """The strip of a clone's copied bitmaps changes qcow2 metadata only: the refresh re-reads
    what is not guest data and ends up where a full hash does."""
    raw, root = tmp_path / "data.raw", tmp_path / "pool"
    root.mkdir()
    make_sparse(raw)
    src = tmp_path / "src.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(src)], check=True)
    subprocess.run(["qemu-img", "bitmap", "--add", str(src), "kvmclone-test"], check=True)
    dest = root / "clone.qcow2"
    clone_with_index(src, dest)
    st = dest.stat()
    was = f"{st.st_dev},{st.st_ino},{st.st_size},{st.st_mtime_ns},{st.st_ctime_ns}"

    def data_clusters() -> list[tuple[int, int]]:
        argv = ["qemu-img", "map", "--output=json", "-f", "qcow2", str(dest)]
        return data_ranges(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)

    before = data_clusters()
    subprocess.run(["qemu-img", "bitmap", "--remove", str(dest), "kvmclone-test"], check=True)
    kept = intersect(before, data_clusters())  # what the engine passes
    assert kept and plain_hash(dest) != plain_hash(src)  # the metadata did change
    rc, out, err = run(
        PY, "index-refresh", str(dest), "--root", str(root), "--was", was,
        stdin=json.dumps(kept).encode(),
    )  # fmt: skip
    assert rc == 0, err
    assert out["refreshed"] and 0 < out["rehashed"] < 16  # metadata clusters, not the data
    answer = index_hash(dest)
    assert answer["index"] == "used" and answer["blocks"] == plain_hash(dest)


def test_index_refresh_refuses_an_index_of_another_state(src: Path, root: Path) -> None:
    dest = root / "clone.img"
    clone_with_index(src, dest)
    st = dest.stat()
    was = f"{st.st_dev},{st.st_ino},{st.st_size},{st.st_mtime_ns + 1},{st.st_ctime_ns}"
    rc, out, err = run(
        PY, "index-refresh", str(dest), "--root", str(root), "--was", was, stdin=b"[]"
    )
    assert rc == 0, err
    assert out["refreshed"] is False and not index_file(dest).exists()


def test_inplace_receive_refuses_a_file_changed_since_it_was_compared(
    src: Path, root: Path
) -> None:
    dest = root / "clone.img"
    clone_with_index(src, dest)
    stamp = index_hash(dest)["stamp"]
    with dest.open("r+b") as f:  # someone writes the clone between compare and sync
        f.write(b"late")
    stream = send(PY, src, "--digest", "sha256")
    args = ["--inplace", "--expect-stamp", ",".join(map(str, stamp))]
    rc, out = receive(PY, dest, root, src.stat().st_size, stream, *args)
    assert rc == 1 and out["kind"] == "changed" and "sync again" in out["error"]
    assert dest.read_bytes()[:4] == b"late"  # nothing written


def test_indexes_of_deleted_files_and_dead_writers_are_swept(src: Path, root: Path) -> None:
    gone = root / ".kvmclone-index-deleted-with-virsh.img.json"
    gone.write_text("{}")
    dead = root / ".kvmclone-index-x.img.json.tmp-999999999"
    dead.write_text("{}")
    other = root / "not-ours.json"
    other.write_text("{}")
    clone_with_index(src, root / "clone.img")  # saving an index sweeps the directory
    assert not gone.exists() and not dead.exists()
    assert other.exists() and index_file(root / "clone.img").exists()
