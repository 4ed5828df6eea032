"""The host agent, run as the hosts run it: real files, real `python3 agent.pyz` subprocesses."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvm_clone_tui.agent import AGENT_VERSION, AGENT_ZIP, bootstrap_argv, protocol
from kvm_clone_tui.agent.host import cli, extents, nbd, paths, wire


def _zipapp() -> Path:
    """The agent's zipapp as a file, as the hosts keep it (written once per version)."""
    path = Path(tempfile.gettempdir()) / f"kvm-clone-agent-{os.getuid()}-{AGENT_VERSION}.pyz"
    if not path.exists() or path.read_bytes() != AGENT_ZIP:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(AGENT_ZIP)
        tmp.replace(path)
    return path


AGENT = _zipapp()
MiB = 1 << 20
BS = MiB  # block size used by most tests: more frames per MiB of test data


def _interpreters() -> list[str]:
    """This interpreter, the system python3 and a Python 3.8 (the oldest a host may have)."""
    found = [sys.executable, "/usr/bin/python3", "/usr/bin/python3.8"]
    found += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8")))[:1]
    seen: dict[str, str] = {}
    for exe in found:
        if exe and os.access(exe, os.X_OK):
            seen.setdefault(os.path.realpath(exe), exe)
    return list(seen.values())


PYTHONS = _interpreters()


def _python_id(exe: str) -> str:
    where = "this" if exe == sys.executable else "system" if exe.startswith("/usr/") else "other"
    return f"{where}-{Path(exe).resolve().name}"


@pytest.fixture(params=PYTHONS, ids=_python_id)
def python(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(python: str, *args: str, stdin: bytes = b"") -> tuple[int, dict[str, Any], str]:
    """Run the agent; return (exit code, its last stdout JSON line, stderr)."""
    proc = subprocess.run(
        [python, str(AGENT), *args], input=stdin, capture_output=True, timeout=120
    )
    lines = proc.stdout.decode().splitlines()
    return proc.returncode, json.loads(lines[-1]) if lines else {}, proc.stderr.decode()


def send(python: str, path: Path, *args: str) -> bytes:
    proc = subprocess.run(
        [python, str(AGENT), "send", str(path), *args], capture_output=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def receive(
    python: str, dest: Path, root: Path, size: int, stream: bytes, *args: str
) -> tuple[int, dict[str, Any]]:
    rc, out, _ = run(
        python, "receive", str(dest), "--root", str(root), "--size", str(size), *args, stdin=stream
    )
    return rc, out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_sparse(path: Path) -> int:
    """A raw image with data at several offsets, an all-zero block written inside a data extent
    (allocated on disk) and holes; returns its size (not a multiple of 4 KiB)."""
    rnd = os.urandom
    size = 16 * MiB + 777
    with path.open("wb") as f:
        f.truncate(size)
        f.write(rnd(300_000))
        f.seek(2 * MiB)
        f.write(rnd(MiB) + bytes(MiB) + rnd(MiB))  # 2..5 MiB: data, written zeros, data
        f.seek(9 * MiB + 12345)
        f.write(rnd(5000))
        f.seek(size - 100)
        f.write(rnd(100))
        f.flush()
        os.fsync(f.fileno())  # allocated now, extent-tree blocks included, like the copy's
    return size


def data_at(path: Path, offset: int) -> int:
    """Where the next data starts at or after offset (SEEK_DATA); the size if none."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, offset, os.SEEK_DATA)
    except OSError:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "src.img"
    make_sparse(path)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "pool"
    path.mkdir()
    return path


# ---------------------------------------------------------------- the file itself


def test_the_client_uses_the_agents_frame_constants() -> None:
    names = ["MAGIC", "FRAME_HEADER", "FRAME_DATA", "FRAME_ZERO", "FRAME_END", "DIGEST_SIZE"]
    names += ["BLOCK_DIGEST_SIZE", "PROTOCOL_VERSION", "HEADER_STRUCT", "BLOCK_STRUCT"]
    for name in [*names, "END_STRUCT"]:
        assert getattr(protocol, name) is getattr(wire, name), name  # one definition


def test_paths_must_be_absolute_normalised_and_nul_free() -> None:
    for bad in ["rel/x", "../x", "/a/../x", "/a/./x", "/a//x", "//x", "/a/", "/a\0b", ""]:
        with pytest.raises(wire.AgentError) as exc:
            paths.check_path(bad)
        assert exc.value.kind == "path"
    assert paths.check_path("/var/lib/libvirt/images/a.qcow2") == "/var/lib/libvirt/images/a.qcow2"


def test_sizes_parse_in_binary_units() -> None:
    assert [cli.parse_size(s) for s in ["4MiB", "4M", "512k", "1g", "7", "2KB"]] == [
        4 * MiB,
        4 * MiB,
        512 << 10,
        1 << 30,
        7,
        2048,
    ]
    assert list(extents.blocks([(100, 10 * MiB)], 4 * MiB, 0)) == [
        (100, 4 * MiB - 100),
        (4 * MiB, 4 * MiB),
        (8 * MiB, 2 * MiB + 100),
    ]
    assert list(extents.blocks([(0, MiB), (2 * MiB, MiB)], BS, 2 * MiB + 5)) == [
        (2 * MiB + 5, MiB - 5)
    ]


# ---------------------------------------------------------------- probe, extents


def test_probe_reports_python_tools_space_and_holes(python: str, tmp_path: Path) -> None:
    rc, out, _ = run(python, "probe", "--path", str(tmp_path), "--path", "/nonexistent-dir")
    assert rc == 0
    version = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out["python"] == version
    assert out["agent_version"] == AGENT_VERSION
    assert out["zstd"] == shutil.which("zstd") and out["qemu_img"] == shutil.which("qemu-img")
    assert out["cpu_count"] == os.cpu_count() and out["seek_data"] is True
    paths = out["paths"]
    assert isinstance(paths, dict)
    st = os.statvfs(tmp_path)
    assert abs(paths[str(tmp_path)]["free"] - st.f_bavail * st.f_frsize) < 256 * MiB
    assert paths[str(tmp_path)]["holes"] is True
    assert paths["/nonexistent-dir"]["kind"] == "not-found"
    assert os.listdir(tmp_path) == []  # the hole test left nothing behind


def test_extents_lists_data_regions(python: str, tmp_path: Path) -> None:
    path = tmp_path / "f.img"
    with path.open("wb") as f:
        f.truncate(4 * MiB)
        f.write(os.urandom(8192))
        f.seek(MiB)
        f.write(os.urandom(3 * 4096))
    rc, out, _ = run(python, "extents", str(path))
    assert rc == 0
    assert out["extents"] == [[0, 8192], [MiB, 3 * 4096]]
    assert out["size"] == 4 * MiB and out["seek_data"] is True
    assert out["allocated"] == path.stat().st_blocks * 512
    rc, out, _ = run(python, "extents", str(tmp_path / "missing"))
    assert rc == 1 and out["kind"] == "not-found"


# ---------------------------------------------------------------- send | receive


@pytest.mark.parametrize("block", ["1MiB", "4MiB"])
def test_send_receive_copies_data_and_keeps_holes(
    python: str, src: Path, root: Path, block: str
) -> None:
    size = src.stat().st_size
    dest = root / "sub" / "dst.img"
    dest.parent.mkdir()
    p1 = subprocess.Popen(
        [python, str(AGENT), "send", str(src), "--block-size", block],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    p2 = subprocess.Popen(
        [python, str(AGENT), "receive", str(dest), "--root", str(root), "--size", str(size)],
        stdin=p1.stdout,
        stdout=subprocess.PIPE,
    )
    assert p1.stdout is not None
    p1.stdout.close()
    out = json.loads(p2.communicate(timeout=120)[0])
    assert p1.wait(timeout=10) == 0 and p2.returncode == 0, out
    assert sha256(dest) == sha256(src)
    assert dest.stat().st_size == size
    assert dest.stat().st_blocks <= src.stat().st_blocks
    assert out["allocated"] == dest.stat().st_blocks * 512
    assert data_at(src, 3 * MiB) == 3 * MiB  # the source holds written zeros there ...
    if block == "1MiB":
        assert data_at(dest, 3 * MiB) == 4 * MiB  # ... the copy a hole
        assert out["zero_bytes"] == MiB
        assert dest.stat().st_blocks < src.stat().st_blocks
    assert data_at(dest, 5 * MiB) == (9 * MiB + 12345) // 4096 * 4096  # holes stay holes
    assert out["end_digest_match"] is True and out["expected_digest_match"] is None
    assert oct(dest.stat().st_mode & 0o777) == "0o600"


def test_a_large_sparse_copy_crosses_writeback_windows(tmp_path: Path, root: Path) -> None:
    src = tmp_path / "large.img"
    with src.open("wb") as f:  # 160 MiB, 1 MiB of data every 8 MiB: 5 writeback windows
        f.truncate(160 * MiB)
        for off in range(0, 160 * MiB, 8 * MiB):
            f.seek(off)
            f.write(os.urandom(MiB))
        f.flush()
        os.fsync(f.fileno())
    stream = send(sys.executable, src)
    rc, out = receive(sys.executable, root / "d.img", root, 160 * MiB, stream)
    assert rc == 0 and out["bytes_written"] == 20 * MiB, out
    assert sha256(root / "d.img") == sha256(src)
    assert (root / "d.img").stat().st_blocks <= src.stat().st_blocks


def test_stream_frames_and_digest_follow_the_definition(python: str, src: Path, root: Path) -> None:
    stream = send(python, src, "--block-size", "1MiB")
    data = src.read_bytes()
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        pos += n
        return stream[pos - n : pos]

    frames = list(protocol.iter_frames(read))
    assert pos == len(stream)  # nothing after END
    header, end = frames[0].meta, frames[-1].meta
    assert header["size"] == len(data) and header["block_size"] == MiB
    assert header["allocated"] == src.stat().st_blocks * 512
    covered = 0
    for f in frames[1:-1]:
        assert f.length and (f.offset // MiB == (f.offset + f.length - 1) // MiB)  # in one block
        chunk = data[f.offset : f.offset + f.length]
        if f.type == protocol.FRAME_DATA:
            assert f.payload == chunk and chunk.count(0) < len(chunk)
        else:
            assert f.type == protocol.FRAME_ZERO and chunk == bytes(f.length)
        covered += f.length
    assert [f.offset for f in frames[1:-1] if f.type == protocol.FRAME_ZERO] == [3 * MiB]
    assert not any(5 * MiB <= f.offset < 9 * MiB for f in frames[1:-1])  # holes: no frames
    digest = protocol.stream_digest(frames)
    assert end["digest"] == digest and end["bytes_read"] == covered == header["total"]
    assert end["zero_bytes"] == MiB and end["bytes_sent"] == covered - MiB
    rc, out = receive(python, root / "d.img", root, len(data), stream, "--expect-digest", digest)
    assert rc == 0 and out["digest"] == digest and out["expected_digest_match"] is True


def test_send_progress_is_rate_limited(python: str, src: Path) -> None:
    t0 = time.monotonic()
    proc = subprocess.run(
        [python, str(AGENT), "send", str(src), "--bwlimit", "2MiB", "--block-size", "1MiB"],
        capture_output=True,
        timeout=60,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0 and elapsed > 0.9  # 2.3 MiB of data (3 MiB read) at 2 MiB/s
    lines = proc.stderr.splitlines()
    summary = json.loads(lines.pop())  # the last line sums the stream up
    assert summary["done"] and summary["bytes_sent"] > 0 and len(summary["digest"]) == 64
    progress = [protocol.parse_progress(line) for line in lines]
    assert progress and all(p is not None for p in progress)
    done = [p.done for p in progress if p]
    assert len(done) >= 2  # the first block, then at least one 0.25 s later
    assert done == sorted(done) and len(done) <= 4 * elapsed + 1
    _, extents, _ = run(python, "extents", str(src))
    assert {p.total for p in progress if p} == {sum(n for _, n in extents["extents"])}


@pytest.mark.parametrize("cut", ["in-header", "after-header", "mid-payload", "before-end"])
def test_truncated_stream_fails_and_removes_dest(
    python: str, src: Path, root: Path, cut: str
) -> None:
    stream = send(python, src, "--block-size", "1MiB")
    end_at = stream.rindex(bytes([protocol.FRAME_END]) + b"\x00\x00")
    header_len = protocol.HEADER_STRUCT.size + protocol.HEADER_STRUCT.unpack(stream[:14])[2]
    at = {
        "in-header": 7,
        "after-header": header_len,
        "mid-payload": header_len + 13 + 1000,
        "before-end": end_at,
    }[cut]
    rc, out = receive(python, root / "d.img", root, src.stat().st_size, stream[:at])
    assert rc == 1 and out["kind"] == "truncated", out
    assert out["removed"] is True and out["path"] == str(root / "d.img")
    assert os.listdir(root) == []


def test_killed_sender_fails_the_receiver_and_removes_dest(
    python: str, tmp_path: Path, root: Path
) -> None:
    src = tmp_path / "big.img"
    src.write_bytes(os.urandom(16 * MiB))
    dest = root / "d.img"
    p1 = subprocess.Popen(
        [python, str(AGENT), "send", str(src), "--bwlimit", "2MiB", "--block-size", "1MiB"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    p2 = subprocess.Popen(
        [python, str(AGENT), "receive", str(dest), "--root", str(root), "--size", str(16 * MiB)],
        stdin=p1.stdout,
        stdout=subprocess.PIPE,
    )
    assert p1.stdout is not None
    p1.stdout.close()
    deadline = time.monotonic() + 30
    while not (dest.exists() and dest.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dest.stat().st_size > 0
    p1.kill()
    out = json.loads(p2.communicate(timeout=30)[0])
    assert p2.returncode == 1 and out["kind"] == "truncated" and out["removed"] is True
    assert not dest.exists()


def test_corrupted_payload_is_a_digest_mismatch(python: str, src: Path, root: Path) -> None:
    stream = bytearray(send(python, src, "--block-size", "1MiB"))
    header_len = protocol.HEADER_STRUCT.size + protocol.HEADER_STRUCT.unpack(stream[:14])[2]
    stream[header_len + 13 + 500] ^= 0x01  # inside the first DATA frame's payload
    rc, out = receive(python, root / "d.img", root, src.stat().st_size, bytes(stream))
    assert rc == 1 and out["kind"] == "digest-mismatch" and out["removed"] is True
    assert os.listdir(root) == []
    good = send(python, src)
    rc, out = receive(
        python, root / "d.img", root, src.stat().st_size, good, "--expect-digest", "ab" * 32
    )
    assert rc == 1 and out["kind"] == "digest-mismatch" and not (root / "d.img").exists()


def _stream(*frames: bytes, size: int = 8 * MiB, start: int = 0) -> bytes:
    meta = {"size": size, "block_size": MiB, "start_offset": start, "total": size}
    return protocol.encode_header(meta) + b"".join(frames)


@pytest.mark.parametrize(
    ("name", "stream"),
    [
        ("bad magic", b"H" + b"NOTACLONE" + _stream()[10:]),
        ("unknown frame", _stream(b"Q" + bytes(12))),
        ("past the end", _stream(protocol.encode_data(8 * MiB - 10, b"x" * 11))),
        ("longer than a block", _stream(protocol.encode_zero(0, MiB + 1))),
        ("empty frame", _stream(protocol.encode_zero(0, 0))),
        ("backwards", _stream(protocol.encode_data(MiB, b"x"), protocol.encode_data(0, b"y"))),
        ("overlapping", _stream(protocol.encode_zero(0, 4096), protocol.encode_data(100, b"y"))),
        ("resume without --resume", _stream(start=MiB)),
        ("other size", _stream(size=4 * MiB)),
        ("bad header", protocol.encode_header({"size": "x"})),
    ],
)
def test_insane_streams_are_refused(name: str, stream: bytes, root: Path) -> None:
    rc, out = receive(sys.executable, root / "d.img", root, 8 * MiB, stream)
    assert rc == 1 and out["kind"] == "protocol", (name, out)
    assert os.listdir(root) == []


def test_end_frame_must_match_what_was_received(root: Path) -> None:
    payload = os.urandom(5000)
    frames = [protocol.Frame(protocol.FRAME_DATA, 4096, 5000, payload)]
    end = {"bytes_sent": 5000, "digest": protocol.stream_digest(frames)}
    ok = _stream(protocol.encode_data(4096, payload), protocol.encode_end(end))
    rc, out = receive(sys.executable, root / "a.img", root, 8 * MiB, ok)
    assert rc == 0 and out["bytes_written"] == 5000, out
    assert (root / "a.img").read_bytes()[4096:9096] == payload
    lie = _stream(protocol.encode_data(4096, payload), protocol.encode_end(dict(end, bytes_sent=1)))
    rc, out = receive(sys.executable, root / "b.img", root, 8 * MiB, lie)
    assert rc == 1 and out["kind"] == "digest-mismatch" and not (root / "b.img").exists()


# ---------------------------------------------------------------- hostile paths


def test_hostile_destinations_are_refused_without_writing(
    python: str, src: Path, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "victim"
    target.write_bytes(b"precious")
    (root / "link").symlink_to(target)
    (root / "dangling").symlink_to(outside / "new")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    stream = send(python, src)
    size = str(src.stat().st_size)
    cases = {
        "../x": "path",
        f"{root}/../outside/x": "path",
        f"{outside}/x": "path",
        str(root): "path",
        f"/{root}/x": "path",
        f"{root}/escape/x": "path",  # a symlinked directory inside the root
        f"{root}/link": "exists",  # O_EXCL never follows
        f"{root}/dangling": "exists",
        f"{root}/nodir/x": "not-found",
    }
    for dest, kind in cases.items():
        rc, out, _ = run(python, "receive", dest, "--root", str(root), "--size", size, stdin=stream)
        assert rc == 1 and out["kind"] == kind, (dest, out)
    rc, out, _ = run(
        python,
        "receive",
        f"{root}/link",
        "--root",
        str(root),
        "--size",
        size,
        "--resume",
        stdin=stream,
    )
    assert rc == 1 and out["kind"] == "path", out  # O_NOFOLLOW
    rc, out, _ = run(python, "receive", f"{root}/x", "--root", "pool", "--size", size, stdin=stream)
    assert rc == 1 and out["kind"] == "path"
    assert target.read_bytes() == b"precious"
    assert sorted(os.listdir(outside)) == ["victim"]
    assert sorted(os.listdir(root)) == ["dangling", "escape", "link"]


# ---------------------------------------------------------------- ENOSPC


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    # The suite runs as root (the lab needs it): a skipped out-of-space test would prove nothing.
    assert os.geteuid() == 0, "mounting a small tmpfs needs root"
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    assert proc.returncode == 0, f"cannot mount a tmpfs here: {proc.stderr.strip()}"
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_no_space_is_reported_and_the_partial_removed(
    python: str, tmp_path: Path, small_fs: Path
) -> None:
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(8 * MiB))
    dest = small_fs / "d.img"
    rc, out = receive(python, dest, small_fs, 8 * MiB, send(python, src))
    assert rc == 1 and out["kind"] == "no-space", out
    assert out["path"] == str(dest) and out["removed"] is True
    assert os.listdir(small_fs) == []


# ---------------------------------------------------------------- hash


def test_hash_matches_between_source_and_copy(python: str, src: Path, root: Path) -> None:
    size = src.stat().st_size
    rc, _ = receive(python, root / "d.img", root, size, send(python, src))
    assert rc == 0
    rc, a, _ = run(python, "hash", str(src), "--block-size", "1MiB")
    rc2, b, _ = run(python, "hash", str(root / "d.img"), "--block-size", "1MiB")
    assert rc == rc2 == 0 and a["blocks"] == b["blocks"]
    blocks = a["blocks"]
    assert isinstance(blocks, list) and len(blocks) == (size + MiB - 1) // MiB == 17
    data = src.read_bytes()
    expected = [
        None
        if data[i : i + MiB] == bytes(len(data[i : i + MiB]))
        else hashlib.blake2b(data[i : i + MiB], digest_size=16).hexdigest()
        for i in range(0, size, MiB)
    ]
    assert blocks == expected
    assert [i for i, d in enumerate(blocks) if d] == [0, 2, 4, 9, 16]
    mine = protocol.BlockHashes.from_json(a)
    with (root / "d.img").open("r+b") as f:
        f.seek(9 * MiB + 12345)
        f.write(b"changed")
    _, c, _ = run(python, "hash", str(root / "d.img"), "--block-size", "1MiB")
    assert mine.differing(protocol.BlockHashes.from_json(c)) == [9]


# ---------------------------------------------------------------- resume


def test_resume_completes_a_kept_partial_copy(python: str, src: Path, root: Path) -> None:
    size = src.stat().st_size
    dest = root / "d.img"
    stream = send(python, src, "--block-size", "1MiB")
    cut = stream.index(bytes([protocol.FRAME_DATA]) + (4 * MiB).to_bytes(8, "big")) + 5000
    rc, out = receive(python, dest, root, size, stream[:cut], "--keep-partial")
    assert rc == 1 and out["kind"] == "truncated" and out["removed"] is False
    resume_at = out["resume_offset"]
    assert resume_at == 4 * MiB and dest.exists()  # everything below the cut frame is final
    rest = send(python, src, "--block-size", "1MiB", "--start-offset", str(resume_at))
    rc, out = receive(python, dest, root, size, rest, "--resume")
    assert rc == 0, out
    assert out["start_offset"] == 4 * MiB and out["bytes_written"] < 2 * MiB
    assert sha256(dest) == sha256(src)
    with dest.open("r+b") as f:  # stale bytes where the source has zeros (3 MiB) and a hole
        f.seek(3 * MiB)
        f.write(b"stale")
        f.seek(6 * MiB)
        f.write(b"stale")
    rest = send(python, src, "--block-size", "1MiB", "--start-offset", str(2 * MiB))
    rc, out = receive(python, dest, root, size, rest, "--resume")
    assert rc == 0 and sha256(dest) == sha256(src), out  # resuming earlier is safe too
    rc, out = receive(python, root / "new.img", root, size, rest, "--resume")
    assert rc == 1 and out["kind"] == "not-found"


def test_inplace_update_with_undo_log_is_put_back_by_undo_apply(
    python: str, src: Path, root: Path
) -> None:
    size = src.stat().st_size
    clone = root / "clone.img"
    shutil.copyfile(src, clone)
    before = sha256(clone)
    newer = root.parent / "newer.img"
    shutil.copyfile(src, newer)
    with newer.open("r+b") as f:  # new data, zeros over data, and growth
        f.seek(2 * MiB)
        f.write(os.urandom(MiB))
        f.seek(4 * MiB)
        f.write(bytes(MiB))
        f.truncate(size + 3 * MiB)
    ranges = json.dumps([[2 * MiB, 3 * MiB], [size, 3 * MiB]]).encode()
    proc = subprocess.run(
        [python, str(AGENT), "send", str(newer), "--block-size", "1MiB", "--ranges-stdin"],
        input=ranges,
        capture_output=True,
        timeout=120,
    )
    undo = root / ".undo-clone"
    rc, out = receive(
        python, clone, root, size + 3 * MiB, proc.stdout, "--inplace", "--undo", str(undo)
    )
    assert rc == 0, out
    assert out["old_size"] == size and 0 < out["undo_bytes"] <= 3 * MiB
    assert sha256(clone) == sha256(newer)
    rc, out = receive(
        python, clone, root, size + 3 * MiB, proc.stdout, "--inplace", "--undo", str(undo)
    )
    assert rc == 1 and out["kind"] == "exists"  # an undo log is never overwritten
    rc, out, _ = run(python, "undo-apply", str(undo), "--root", str(root), "--target", str(clone))
    assert rc == 0, out
    assert out["size"] == size and sha256(clone) == before
    undo.write_bytes(undo.read_bytes()[:-10])  # a damaged log is refused, not half-applied
    rc, out, _ = run(python, "undo-apply", str(undo), "--root", str(root), "--target", str(clone))
    assert rc == 1 and "truncated" in out["error"]
    rc, out, _ = run(
        python, "undo-apply", str(undo), "--root", str(root / "sub"), "--target", str(clone)
    )
    assert rc == 1 and out["kind"] == "path"


def test_sha256_digests_are_chosen_by_the_sender_and_followed_by_the_receiver(
    python: str, src: Path, root: Path
) -> None:
    size = src.stat().st_size
    stream = send(python, src, "--block-size", "1MiB", "--digest", "sha256")
    header = json.loads(stream[14 : 14 + int.from_bytes(stream[10:14], "big")])
    assert header["digest"] == "sha256"
    rc, out = receive(python, root / "d.img", root, size, stream)
    assert rc == 0 and sha256(root / "d.img") == sha256(src)
    plain = send(python, src, "--block-size", "1MiB")
    rc, other = receive(python, root / "e.img", root, size, plain)
    assert rc == 0 and other["digest"] != out["digest"]  # another definition, both checked
    bad = stream.replace(b'"digest":"sha256"', b'"digest":"md5xx1"', 1)
    rc, failed = receive(python, root / "f.img", root, size, bad)
    assert rc == 1 and "digest" in failed["error"]
    rc, hashed, _ = run(python, "hash", str(src), "--block-size", "1MiB", "--algo", "sha256")
    first = src.read_bytes()[: 1 << 20]
    assert rc == 0 and hashed["blocks"][0] == hashlib.sha256(first).hexdigest()[:32]
    rc, probe, _ = run(python, "probe")
    assert rc == 0 and isinstance(probe["sha_hw"], bool)


def test_put_writes_new_files_or_replaces_atomically_inside_the_root(
    python: str, root: Path, tmp_path: Path
) -> None:
    target = root / "m.json"
    rc, out, _ = run(python, "put", str(target), "--root", str(root), stdin=b"one")
    assert rc == 0 and target.read_bytes() == b"one"
    rc, out, _ = run(python, "put", str(target), "--root", str(root), stdin=b"two")
    assert rc == 1 and target.read_bytes() == b"one"
    rc, out, _ = run(python, "put", str(target), "--root", str(root), "--replace", stdin=b"two")
    assert rc == 0 and target.read_bytes() == b"two"
    outside = tmp_path / "outside.json"
    rc, out, _ = run(python, "put", str(outside), "--root", str(root), stdin=b"x")
    assert rc == 1 and out["kind"] == "path" and not outside.exists()
    assert sorted(p.name for p in root.iterdir()) == ["m.json"]  # no temporary left


def test_stat_reports_size_times_and_identity(python: str, src: Path, tmp_path: Path) -> None:
    rc, out, _ = run(python, "stat", str(src), str(tmp_path / "missing"))
    assert rc == 0
    st = src.stat()
    found = out["paths"][str(src)]
    assert (found["size"], found["mtime_ns"], found["ino"]) == (
        st.st_size,
        st.st_mtime_ns,
        st.st_ino,
    )
    assert out["paths"][str(tmp_path / "missing")]["kind"] == "not-found"


def test_dirty_ranges_are_cut_out_of_block_status_runs() -> None:
    runs = [(0, 100, 0), (100, 50, 3), (150, 250, 0)]
    dirty = [(50, 70), (300, 10), (390, 100)]
    assert list(nbd._intersect(runs, dirty)) == [
        (50, 50, 0),
        (100, 20, 3),
        (300, 10, 0),
        (390, 10, 0),
    ]
    assert list(nbd._intersect(runs, [])) == []


# ---------------------------------------------------------------- shipping


def test_bootstrap_runs_the_zipapp_sent_on_stdin(python: str, src: Path, root: Path) -> None:
    proc = subprocess.run(
        bootstrap_argv(["probe"], python), input=AGENT_ZIP, capture_output=True, timeout=60
    )
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["agent_version"] == AGENT_VERSION
    size = str(src.stat().st_size)
    stream = send(python, src)
    args = ["receive", str(root / "d.img"), "--root", str(root), "--size", size]
    proc = subprocess.run(
        bootstrap_argv(args, python), input=AGENT_ZIP + stream, capture_output=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout
    assert sha256(root / "d.img") == sha256(src)
    tampered = AGENT_ZIP.replace(b"kvm-clone host agent", b"kvm-clone host agenT")
    assert tampered != AGENT_ZIP
    proc = subprocess.run(
        bootstrap_argv(["probe"], python), input=tampered, capture_output=True, timeout=60
    )
    assert proc.returncode == 1 and json.loads(proc.stdout)["kind"] == "bootstrap"


# ---------------------------------------------------------------- rename, remove, usage


def test_rename_and_remove_stay_inside_the_root(python: str, root: Path, tmp_path: Path) -> None:
    (root / "a").write_bytes(b"A")
    (root / "b").write_bytes(b"B")
    (tmp_path / "victim").write_bytes(b"V")
    (root / "link").symlink_to(tmp_path / "victim")
    r = str(root)
    rc, out, _ = run(python, "rename", f"{r}/a", f"{r}/b", "--root", r)
    assert rc == 1 and out["kind"] == "exists"
    assert (root / "a").read_bytes() == b"A" and (root / "b").read_bytes() == b"B"
    rc, out, _ = run(python, "rename", f"{r}/a", f"{r}/c", "--root", r)
    assert rc == 0 and (root / "c").read_bytes() == b"A" and not (root / "a").exists()
    rc, out, _ = run(python, "rename", f"{r}/c", f"{r}/b", "--root", r, "--replace")
    assert rc == 0 and (root / "b").read_bytes() == b"A" and not (root / "c").exists()
    rc, out, _ = run(python, "rename", f"{r}/b", f"{tmp_path}/stolen", "--root", r)
    assert rc == 1 and out["kind"] == "path" and not (tmp_path / "stolen").exists()
    rc, out, _ = run(python, "rename", f"{r}/link", f"{r}/x", "--root", r)
    assert rc == 1 and out["kind"] == "path"
    rc, out, _ = run(python, "remove", f"{tmp_path}/victim", "--root", r)
    assert rc == 1 and out["kind"] == "path"
    rc, out, _ = run(python, "remove", f"{r}/link", "--root", r)
    assert rc == 1 and out["kind"] == "path"
    assert (tmp_path / "victim").read_bytes() == b"V"
    (root / "dir").mkdir()
    rc, out, _ = run(python, "remove", f"{r}/dir", "--root", r)
    assert rc == 1 and out["kind"] == "path" and (root / "dir").is_dir()
    rc, out, _ = run(python, "remove", f"{r}/b", "--root", r)
    assert rc == 0 and out["removed"] is True and not (root / "b").exists()
    rc, out, _ = run(python, "remove", f"{r}/b", "--root", r)
    assert rc == 1 and out["kind"] == "not-found"
    rc, out, _ = run(python, "remove", f"{r}/b", "--root", r, "--missing-ok")
    assert rc == 0 and out["removed"] is False


def test_usage_errors_are_json_too(src: Path) -> None:
    rc, out, _ = run(sys.executable, "send", str(src), "--block-size", "1000")
    assert rc == 2 and out == {}  # send keeps stdout for the stream ...
    proc = subprocess.run(
        [sys.executable, str(AGENT), "send", str(src), "--block-size", "1000"], capture_output=True
    )
    assert json.loads(proc.stderr)["kind"] == "usage"  # ... and reports on stderr
    rc, out, _ = run(
        sys.executable, "receive", "/x", "--root", "/", "--size", "1", "--expect-digest", "zz"
    )
    assert rc == 2 and out["kind"] == "usage"
    rc, out, _ = run(sys.executable, "send", "relative/path")
    assert rc == 1 and out == {}


def test_client_side_result_parsing() -> None:
    with pytest.raises(protocol.AgentFailure) as exc:
        protocol.parse_result(
            b'{"progress": 1}\n{"error": "full", "kind": "no-space", "path": "/p"}\n'
        )
    assert exc.value.kind == "no-space" and exc.value.path == "/p"
    with pytest.raises(protocol.AgentFailure) as exc:
        protocol.parse_result("Traceback ...")
    assert exc.value.kind == "protocol"
    assert protocol.parse_result('{"ok": true}\n') == {"ok": True}
    assert protocol.parse_progress('{"progress": 5, "total": 10}') == protocol.Progress(5, 10)
    assert protocol.parse_progress("noise") is None
    result = protocol.ReceiveResult.from_json(
        {"size": 9, "bytes_written": 4, "zero_bytes": 0, "digest": "d", "allocated": 4096}
    )
    assert result.bytes_written == 4 and result.start_offset == 0
