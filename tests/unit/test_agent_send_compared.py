"""``send --against-stdin``: one pass over the source that hashes each block and sends those
whose digest differs from the destination's ``hash`` answer (what a hash-mode sync does when
the clone's block index stands in for reading the clone)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_agent import AGENT, MiB, make_sparse, receive
from tests.unit.test_agent_index import IBS, PY, hash_answer


def their_hashes(path: Path) -> bytes:
    return json.dumps(hash_answer(path)).encode()


def send_against(src: Path, dest: Path) -> tuple[bytes, dict[str, Any]]:
    proc = subprocess.run(
        [PY, str(AGENT), "send", str(src), "--digest", "sha256", "--against-stdin"],
        input=their_hashes(dest),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(proc.stderr.decode().splitlines()[-1])


def sync_against(src: Path, dest: Path) -> dict[str, Any]:
    stream, done = send_against(src, dest)
    rc, out = receive(PY, dest, dest.parent, src.stat().st_size, stream, "--inplace")
    assert rc == 0, out
    assert out["bytes_written"] == done["bytes_sent"] and out["zero_bytes"] == done["zero_bytes"]
    return done


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    src, dest = tmp_path / "src.img", tmp_path / "clone.img"
    make_sparse(src)
    shutil.copyfile(src, dest)
    return src, dest


def test_unchanged_sends_nothing(pair: tuple[Path, Path]) -> None:
    src, dest = pair
    done = sync_against(src, dest)
    assert done["bytes_sent"] == 0 and done["zero_bytes"] == 0


def test_only_changed_blocks_move_and_zeroed_blocks_become_zeros(pair: tuple[Path, Path]) -> None:
    src, dest = pair
    with src.open("r+b") as f:
        f.seek(2 * MiB + 100)  # inside a data extent: one block
        f.write(os.urandom(1000))
        f.seek(4 * MiB)  # three whole blocks of data become zeros
        f.write(bytes(3 * IBS))
        f.seek(12 * MiB)  # in a hole of the clone: a new block
        f.write(b"new")
    done = sync_against(src, dest)
    assert done["bytes_sent"] == 2 * IBS and done["zero_bytes"] == 3 * IBS
    assert dest.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("delta", [100_001, -100_001, -5 * MiB])
def test_a_resized_source(pair: tuple[Path, Path], delta: int) -> None:
    src, dest = pair
    size = src.stat().st_size + delta
    with src.open("r+b") as f:
        f.truncate(size)
        f.seek(size - 7)
        f.write(b"the end")
    sync_against(src, dest)
    assert dest.stat().st_size == size and dest.read_bytes() == src.read_bytes()


def test_data_where_the_source_has_a_hole_is_zeroed(pair: tuple[Path, Path]) -> None:
    src, dest = pair
    with dest.open("r+b") as f:  # the clone got data where the source has a hole
        f.seek(7 * MiB)
        f.write(os.urandom(IBS + 10))
    done = sync_against(src, dest)
    assert done["bytes_sent"] == 0 and done["zero_bytes"] == 2 * IBS
    assert dest.read_bytes() == src.read_bytes()


def test_a_bad_destination_answer_is_refused(pair: tuple[Path, Path]) -> None:
    src, _ = pair
    bad = json.dumps({"size": 10 * MiB, "block_size": IBS, "algo": "sha256", "blocks": [None]})
    proc = subprocess.run(
        [PY, str(AGENT), "send", str(src), "--against-stdin"],
        input=bad.encode(),
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 1 and proc.stdout == b""
    assert json.loads(proc.stderr.decode().splitlines()[-1])["kind"] == "usage"


def test_the_source_cannot_be_opened_for_writing_while_it_is_read(
    pair: tuple[Path, Path],
) -> None:
    """Under the read lease a writer's open (a VM starting) waits until the send has stopped,
    and the send stops with a clear error instead of reading a file that changes."""
    src, _ = pair
    proc = subprocess.Popen(
        [PY, str(AGENT), "send", str(src), "--against-stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,  # never read: the sender blocks once the pipe is full
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(
        json.dumps({"size": 0, "block_size": IBS, "algo": "sha256", "blocks": []}).encode()
    )
    proc.stdin.close()
    time.sleep(1.0)  # it has taken the lease and filled the pipe
    with src.open("r+b"):  # blocks until the agent let go of the file
        assert proc.wait(timeout=30) == 1
    error = json.loads(proc.stderr.read().decode().splitlines()[-1])
    assert error["kind"] == "changed" and "opened the source file for writing" in error["error"]


def test_a_source_open_for_writing_is_refused(pair: tuple[Path, Path]) -> None:
    src, dest = pair
    with src.open("r+b"):  # as a running VM's QEMU holds it
        proc = subprocess.run(
            [PY, str(AGENT), "send", str(src), "--against-stdin"],
            input=their_hashes(dest),
            capture_output=True,
            timeout=60,
        )
    assert proc.returncode == 1 and proc.stdout == b""
    assert json.loads(proc.stderr.decode().splitlines()[-1])["kind"] == "busy"


def resident(path: Path) -> int:
    """Bytes of ``path`` in the page cache (util-linux ``fincore``)."""
    done = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.split()[0])


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs fincore (util-linux)")
def test_the_source_pages_it_read_are_given_back(tmp_path: Path) -> None:
    """A sync reads its source whole, once: what it read does not stay in the page cache."""
    src, dest = tmp_path / "src.img", tmp_path / "clone.img"
    with src.open("wb") as f:
        f.write(os.urandom(24 * MiB + 777))  # more than one release window, an odd end
    shutil.copyfile(src, dest)
    with src.open("r+b") as f:
        f.seek(20 * MiB)
        f.write(b"changed")
        os.fsync(f.fileno())  # on disk, as a shut-off VM's are: clean pages can be given back
    src.read_bytes()  # all of it cached
    assert resident(src) >= 24 * MiB
    done = sync_against(src, dest)
    assert resident(src) <= 4 * MiB  # (a page batch a CPU still holds may stay)
    assert done["bytes_sent"] == IBS and dest.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("lasting", [False, True])
def test_stream_hash_keeps_submission_order_across_inline_and_worker_payloads(
    lasting: bool,
) -> None:
    """Small payloads are hashed at once, big ones on the worker thread: the digest is still
    that of everything in submission order, and each ``then`` runs after its own payload."""
    from kvm_clone_tui.agent.host import hashing, wire

    small = wire.INLINE_HASH
    sizes = [4096, 2 * MiB, 65536, 1 * MiB, 100, small, small - 1, 3 * MiB, 1]
    payloads = [os.urandom(n) for n in sizes]
    ran: list[int] = []
    stream = hashing.StreamHash("sha256", lasting=lasting)
    for k, payload in enumerate(payloads):
        stream.submit(b"h%d" % k, memoryview(payload), functools.partial(ran.append, k))
    whole = b"".join(b"h%d" % k + p for k, p in enumerate(payloads))
    assert stream.hexdigest() == hashlib.sha256(whole).hexdigest()
    assert ran == list(range(len(payloads)))
