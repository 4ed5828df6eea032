"""The pure parts of resuming a clone: block comparison, what may resume, adoption, journals."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from kvm_clone_tui.api.models import VM, VMState
from kvm_clone_tui.api.options import CloneOptions
from kvm_clone_tui.cli.main import main
from kvm_clone_tui.engine.block_compare import compare_blocks, split_at_extents
from kvm_clone_tui.engine.journal import (
    ADOPTED,
    COMMITTING,
    COPYING,
    Journal,
    JournalRecord,
    StagedFile,
    unfinished,
)
from kvm_clone_tui.engine.plan import ClonePlan, FilePlan
from kvm_clone_tui.engine.resume import (
    ResumeError,
    adoption,
    find_job,
    options_from_record,
    options_record,
    plan_mismatch,
    resume_blocker,
)

BS = 64 << 10
POOL = "/var/lib/libvirt/images"


def _hashes(data: bytes, size: int | None = None) -> list[str | None]:
    """What the agent's ``hash`` says of ``data`` (None: a block of zeros)."""
    size = len(data) if size is None else size
    out: list[str | None] = []
    for off in range(0, size, BS):
        block = data[off : min(off + BS, size)]
        zero = not block.strip(b"\0")
        out.append(None if zero else hashlib.blake2b(block, digest_size=16).hexdigest())
    return out


def _apply(staged: bytes, source: bytes, ranges: tuple[tuple[int, int], ...]) -> bytes:
    """What the in-place receiver makes of ``staged``: ranges written, then sized."""
    out = bytearray(staged[: len(source)].ljust(len(source), b"\0"))
    for off, n in ranges:
        out[off : off + n] = source[off : off + n]
    return bytes(out)


def _source() -> bytes:
    blocks = [os.urandom(BS), bytes(BS), os.urandom(BS), os.urandom(BS), bytes(BS), bytes(BS)]
    return b"".join(blocks) + os.urandom(1000)  # a short last block


@pytest.mark.parametrize(
    "staged_len", [0, BS, 2 * BS + 100, 3 * BS, 6 * BS + 1000, 7 * BS], ids=lambda n: f"{n}B"
)
def test_a_prefix_is_completed_and_only_what_is_missing_moves(staged_len: int) -> None:
    source = _source()
    staged = source[:staged_len]
    found = compare_blocks(_hashes(source), _hashes(staged), len(source), len(staged), BS)
    assert _apply(staged, source, found.ranges) == source
    data = 3 * BS + 1000
    assert found.data_bytes == data
    assert found.reused_bytes + found.send_bytes >= data  # every data byte is kept or sent
    if staged_len >= len(source):
        assert found.ranges == () and found.reused_bytes == data
    if staged_len >= BS:
        assert found.reused_bytes >= BS


def test_zero_blocks_past_the_staged_end_are_not_sent() -> None:
    source = os.urandom(BS) + bytes(50 * BS)
    found = compare_blocks(_hashes(source), _hashes(source[:BS]), len(source), BS, BS)
    assert found.ranges == () and found.reused_bytes == BS


def test_a_damaged_block_is_sent_again_and_a_stray_one_is_zeroed() -> None:
    source = _source()
    staged = bytearray(source)
    staged[2 * BS + 7] ^= 0xFF  # damaged data
    staged[BS + 3] = 1  # data where the source has zeros
    found = compare_blocks(_hashes(source), _hashes(bytes(staged)), len(source), len(staged), BS)
    assert found.ranges == ((BS, 2 * BS),)
    assert _apply(bytes(staged), source, found.ranges) == source
    assert found.reused_bytes == found.data_bytes - BS


def test_a_partly_staged_block_matches_only_when_it_is_zeros() -> None:
    source = bytes(BS) + os.urandom(BS)
    half = compare_blocks(_hashes(source), _hashes(source[: BS + 10]), len(source), BS + 10, BS)
    assert half.ranges == ((BS, BS),)
    zeros = bytes(BS + 10)
    found = compare_blocks(_hashes(bytes(2 * BS)), _hashes(zeros), 2 * BS, BS + 10, BS)
    assert found.ranges == ()


def test_a_staged_file_longer_than_the_source_is_cut() -> None:
    source = os.urandom(BS + 100)
    staged = source + os.urandom(BS)
    found = compare_blocks(_hashes(source), _hashes(staged), len(source), len(staged), BS)
    assert found.ranges == ((BS, 100),)


def test_ranges_are_cut_at_the_sources_holes() -> None:
    extents = [(4096, 8192), (BS + 4096, 4096)]
    assert split_at_extents(((0, 2 * BS),), extents) == (
        (0, 4096),
        (4096, 8192),
        (12288, BS - 8192),
        (BS + 4096, 4096),
        (BS + 8192, BS - 8192),
    )
    assert split_at_extents(((8192, 100),), extents) == ((8192, 100),)
    assert split_at_extents((), extents) == ()


def _record(**kw: object) -> JournalRecord:
    record = JournalRecord(
        job_id="20260101-000000-aaaaaaaa",
        kind="clone",
        source_host="alpha",
        dest_host="beta",
        vm="db01",
        new_name="db01-copy",
        new_uuid="u-old",
        pool="default",
        pool_path=POOL,
        state=COPYING,
        files=[
            StagedFile(
                f"{POOL}/.kvmclone-partial-20260101-000000-aaaaaaaa-db01-copy-vda.img",
                f"{POOL}/db01-copy-vda.img",
                source="/src/vda.img",
                size=4096,
            ),
        ],
        source_uuid="src-uuid",
        options=options_record(CloneOptions(bandwidth_limit=5, parallel=3)),
    )
    return replace(record, **kw)  # type: ignore[arg-type]


def _plan(**kw: object) -> ClonePlan:
    vm = VM("db01", "src-uuid", VMState.SHUT_OFF, 1, 1024, False, True, "kvm")
    file = FilePlan(
        "vda",
        "disk",
        "raw",
        "/src/vda.img",
        f"{POOL}/db01-copy-vda.img",
        f"{POOL}/.kvmclone-partial-20260102-000000-bbbbbbbb-db01-copy-vda.img",
        4096,
        4096,
    )
    plan = ClonePlan(
        "20260102-000000-bbbbbbbb",
        "alpha",
        "beta",
        vm,
        "db01-copy",
        "u-new",
        "default",
        POOL,
        1 << 30,
        (file,),
        "relay",
        "test",
        False,
        "test",
        1 << 20,
        "<domain/>",
    )
    return replace(plan, **kw)  # type: ignore[arg-type]


def test_what_blocks_a_resume() -> None:
    assert resume_blocker(_record()) is None
    assert resume_blocker(_record(state="failed")) is None
    assert "live" in (resume_blocker(_record(live=True)) or "")
    assert "commit" in (resume_blocker(_record(state=COMMITTING)) or "")
    assert "commit" in (resume_blocker(_record(defined=True)) or "")
    assert "commit" in (resume_blocker(_record(replaced_xml="<domain/>")) or "")
    assert "sync" in (resume_blocker(_record(kind="sync")) or "")


def test_a_plan_continues_a_job_only_when_nothing_changed() -> None:
    record, plan = _record(), _plan()
    assert plan_mismatch(record, plan) is None
    assert "UUID" in (plan_mismatch(_record(source_uuid="other"), plan) or "")
    grown = replace(plan.files[0], size=8192)
    assert "changed size" in (plan_mismatch(record, replace(plan, files=(grown,))) or "")
    more = replace(plan.files[0], final_path=f"{POOL}/db01-copy-vdb.img")
    assert "disks changed" in (plan_mismatch(record, replace(plan, files=(more,))) or "")
    live = replace(plan.files[0], live_export="vda")
    assert "live" in (plan_mismatch(record, replace(plan, files=(live,))) or "")
    assert "pool" in (plan_mismatch(record, replace(plan, pool_path="/elsewhere")) or "")
    # Journals of older versions lack sizes and UUIDs: the block comparison still decides.
    old = _record(source_uuid="", files=[replace(record.files[0], size=-1)])
    assert plan_mismatch(old, replace(plan, files=(grown,))) is None


def test_adoption_pairs_staged_files_by_final_name() -> None:
    old = _record()
    new = _record(
        job_id="new",
        files=[StagedFile(f"{POOL}/.kvmclone-partial-new-db01-copy-vda.img", old.files[0].final)],
    )
    [(staged, path)] = adoption(old, new)
    assert staged is new.files[0] and path == old.files[0].staging


def test_options_come_back_from_the_journal_with_names_pinned() -> None:
    options = options_from_record(_record())
    assert (options.bandwidth_limit, options.parallel) == (5, 3)
    assert (options.new_name, options.pool, options.idempotent) == ("db01-copy", "default", True)
    with pytest.raises(ResumeError, match="older kvm-clone"):
        options_from_record(_record(options={}))


def test_journals_of_older_versions_still_load(tmp_path: Path) -> None:
    raw = {
        "job_id": "j1",
        "kind": "clone",
        "source_host": "a",
        "dest_host": "b",
        "vm": "v",
        "new_name": "v",
        "new_uuid": "u",
        "pool": "default",
        "pool_path": POOL,
        "state": "copying",
        "files": [{"staging": "s", "final": "f", "committed": False}],
        "owner_pid": 0,
    }
    (tmp_path / "j1.json").write_text(json.dumps(raw))
    [journal] = unfinished(tmp_path)
    assert journal.record.files[0].size == -1 and not journal.record.live
    journal.step(ADOPTED, "taken over")
    assert unfinished(tmp_path) == []


def test_find_job_refuses_unknown_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVM_CLONE_STATE_DIR", str(tmp_path))
    Journal(_record(owner_pid=0), tmp_path / "jobs").save()
    assert find_job("20260101-000000-aaaaaaaa").record.vm == "db01"
    with pytest.raises(ResumeError, match="no unfinished job"):
        find_job("nope")


def test_resume_teaches_its_use_and_lists_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["resume", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: kvm-clone resume" in out and "recover" in out and "block" in out
    monkeypatch.setenv("KVM_CLONE_STATE_DIR", str(tmp_path))
    Journal(_record(owner_pid=0), tmp_path / "jobs").save()
    Journal(_record(job_id="live-one", live=True, owner_pid=0), tmp_path / "jobs").save()
    assert main(["resume", "--list", "--output", "json"]) == 0
    jobs = {j["job_id"]: j for j in json.loads(capsys.readouterr().out)["jobs"]}
    assert jobs["20260101-000000-aaaaaaaa"]["resumable"]
    assert not jobs["live-one"]["resumable"] and "live" in jobs["live-one"]["why_not"]
