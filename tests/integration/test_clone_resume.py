"""Interrupted clones resume from what they already staged (real lab hosts, real SSH).

The clone of db01 (a 12 MiB raw disk and a 4.4 MiB qcow2 disk) is slowed to 2 MiB/s per disk
so that it can be interrupted mid-copy: by ``kill -9`` of the client, by killing the
destination's SSH sessions (the link drops), or by cancelling the task (Ctrl-C).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvm_clone_tui.api.client import KVMCloneClient
from kvm_clone_tui.api.config import Config
from kvm_clone_tui.engine.clone import CloneFailed
from kvm_clone_tui.engine.journal import ADOPTED, Journal, jobs_dir, unfinished
from kvm_clone_tui.engine.progress import JobEvent
from kvm_clone_tui.lab.host import LabHostRuntime
from kvm_clone_tui.lab.manager import Lab
from tests.integration.conftest import IMAGES, domain_names, leftovers
from tests.integration.test_clone import _sshd_sessions, assert_same_disk

SYS, DATA = f"{IMAGES}/db01/sys/disk.img", f"{IMAGES}/db01/data/disk.img"
STAGED_ENOUGH = 4 << 20  # bytes of vda that must have arrived before the interruption


def _finals(name: str) -> tuple[str, str]:
    return f"{IMAGES}/{name}-vda.img", f"{IMAGES}/{name}-vdb.qcow2"


def _assert_cloned(lab: Lab, beta: LabHostRuntime, name: str) -> None:
    vda, vdb = _finals(name)
    assert_same_disk(lab, SYS, "beta", vda)
    assert_same_disk(lab, DATA, "beta", vdb)
    assert name in domain_names(beta)
    assert leftovers(beta) == []
    assert unfinished() == []


def _source_data(lab: Lab) -> int:
    """Bytes the source's files occupy: more than a clone of them moves."""
    return sum(lab.layout.host_path("alpha", p).stat().st_blocks * 512 for p in (SYS, DATA))


def _staged(beta: LabHostRuntime, name: str, target: str) -> Path | None:
    images = beta.layout.host_path("beta", IMAGES)
    for path in images.iterdir():
        if path.name.startswith(".kvmclone-partial-") and f"-{name}-{target}." in path.name:
            return path
    return None


def _wait_staged(beta: LabHostRuntime, name: str, timeout: float = 90) -> Path:
    """Until vda of clone ``name`` has STAGED_ENOUGH bytes staged (it is still copying)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = _staged(beta, name, "vda")
        try:
            if path is not None and path.stat().st_blocks * 512 >= STAGED_ENOUGH:
                return path
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{name}: vda was not staged in time")


def _data_block(path: Path, limit: int) -> int:
    """Offset of the first 64 KiB block below ``limit`` that holds data (not zeros)."""
    with path.open("rb") as f:
        for offset in range(0, limit, 64 << 10):
            f.seek(offset)
            if f.read(64 << 10).strip(b"\0"):
                return offset
    raise AssertionError(f"no data in the first {limit} bytes of {path}")


def _cli(lab: Lab, *args: str) -> list[str]:
    return [sys.executable, "-m", "kvm_clone_tui", *args]


def _env(lab: Lab) -> dict[str, str]:
    env = dict(os.environ, KVM_CLONE_CONFIG=str(lab.layout.client_config))
    env.pop("SSH_AUTH_SOCK", None)  # relay: the client pumps the bytes, and dies with them
    return env


def _clone_argv(lab: Lab, name: str) -> list[str]:
    return _cli(lab, "clone", "alpha", "beta", "db01", "--new-name", name, "--idempotent")


def _killed_mid_copy(lab: Lab, beta: LabHostRuntime, name: str) -> str:
    """Start a slow CLI clone, SIGKILL it mid-copy; return its job id."""
    proc = subprocess.Popen(
        [*_clone_argv(lab, name), "--bandwidth-limit", "2M"],
        env=_env(lab),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_staged(beta, name)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _staged(beta, name, "vda") is not None, "the kill took the staged file with it"
    jobs = unfinished()
    assert len(jobs) == 1 and jobs[0].record.new_name == name
    return jobs[0].record.job_id


def _assert_adopted(old_job: str, new_job: str) -> None:
    old = Journal.load(jobs_dir() / f"{old_job}.json").record
    assert old.state == ADOPTED and old.adopted_by == new_job


def test_kill_9_then_idempotent_rerun_resumes(lab: Lab, clean_beta: LabHostRuntime) -> None:
    name = "db01-resumed"
    old_job = _killed_mid_copy(lab, clean_beta, name)
    done = subprocess.run(
        [*_clone_argv(lab, name), "--output", "json"],
        env=_env(lab),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["result"]
    assert result["resumed_from"] == old_job
    assert result["bytes_reused"] >= STAGED_ENOUGH
    assert result["bytes_copied"] <= _source_data(lab) - STAGED_ENOUGH
    _assert_cloned(lab, clean_beta, name)
    _assert_adopted(old_job, result["job_id"])


def test_kill_9_then_resume_command_resumes(lab: Lab, clean_beta: LabHostRuntime) -> None:
    name = "db01-resume-cmd"
    old_job = _killed_mid_copy(lab, clean_beta, name)
    listed = subprocess.run(
        _cli(lab, "resume", "--list"), env=_env(lab), capture_output=True, text=True, timeout=60
    )
    assert old_job in listed.stdout and "resumable" in listed.stdout, listed.stdout
    done = subprocess.run(
        _cli(lab, "resume", "--output", "json"),
        env=_env(lab),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and [j["job_id"] for j in report["jobs"]] == [old_job]
    result = report["jobs"][0]["result"]
    assert result["resumed_from"] == old_job and result["bytes_reused"] >= STAGED_ENOUGH
    assert result["bytes_copied"] <= _source_data(lab) - STAGED_ENOUGH
    _assert_cloned(lab, clean_beta, name)
    again = subprocess.run(
        _cli(lab, "resume"), env=_env(lab), capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0 and "nothing to resume" in again.stdout


async def test_kept_failure_with_a_damaged_block_is_repaired_by_resume(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, no_agent: None
) -> None:
    """The TUI's "keep for later": the link drops, a staged block is damaged, resume_job."""
    name = "db01-damaged"
    async with KVMCloneClient(lab_config) as client:
        task = asyncio.ensure_future(
            client.clone_vm(
                "alpha",
                "beta",
                "db01",
                new_name=name,
                bandwidth_limit=2 << 20,
                auto_rollback=False,
                check=True,
            )
        )
        staged = await asyncio.to_thread(_wait_staged, clean_beta, name)
        for pid in _sshd_sessions(clean_beta.namespace()):
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(CloneFailed) as failed:
            await asyncio.wait_for(task, 60)
    assert staged.exists(), "the receiver removed what it had written"
    offset = _data_block(lab.layout.host_path("alpha", SYS), STAGED_ENOUGH)
    with staged.open("r+b") as f:  # garbage over a data block that had arrived intact
        f.seek(offset)
        f.write(os.urandom(64 << 10))
    events: list[JobEvent] = []
    async with KVMCloneClient(lab_config) as client:
        result = await client.resume_job(failed.value.job_id, on_event=events.append)
    assert result.resumed_from == failed.value.job_id
    assert result.bytes_reused >= STAGED_ENOUGH - (64 << 10)
    assert 64 << 10 <= result.bytes_copied <= _source_data(lab) - STAGED_ENOUGH + (64 << 10)
    messages = [e.message for e in events]
    assert any("resuming job" in m and "already there" in m for m in messages), messages
    _assert_cloned(lab, clean_beta, name)
    _assert_adopted(failed.value.job_id, result.job_id)


async def test_cancelled_idempotent_clone_keeps_its_files_and_resumes(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, no_agent: None
) -> None:
    name = "db01-ctrl-c"
    async with KVMCloneClient(lab_config) as client:
        task = asyncio.ensure_future(
            client.clone_vm(
                "alpha",
                "beta",
                "db01",
                new_name=name,
                bandwidth_limit=2 << 20,
                idempotent=True,
                check=True,
            )
        )
        await asyncio.to_thread(_wait_staged, clean_beta, name)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _staged(clean_beta, name, "vda") is not None
        [kept] = unfinished()
        assert kept.record.state == "failed"
        assert any("kept for resume: cancelled" in line["message"] for line in kept.record.log)
        result = await client.clone_vm(
            "alpha", "beta", "db01", new_name=name, idempotent=True, check=True
        )
    assert result.resumed_from == kept.record.job_id and result.bytes_reused >= STAGED_ENOUGH
    _assert_cloned(lab, clean_beta, name)


def test_recover_still_rolls_back(lab: Lab, clean_beta: LabHostRuntime) -> None:
    name = "db01-recovered"
    old_job = _killed_mid_copy(lab, clean_beta, name)
    done = subprocess.run(
        _cli(lab, "recover", "--output", "json"),
        env=_env(lab),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rolled_back"] == [old_job]
    assert leftovers(clean_beta) == [] and unfinished() == []
    assert name not in domain_names(clean_beta)


async def test_source_changed_since_starts_afresh_and_says_why(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, no_agent: None
) -> None:
    name = "db01-changed"
    old_job = await asyncio.to_thread(_killed_mid_copy, lab, clean_beta, name)
    data = lab.layout.host_path("alpha", DATA)
    size = data.stat().st_size
    os.truncate(data, size + (64 << 10))  # the source grew meanwhile (a hole at its end)
    try:
        events: list[JobEvent] = []
        async with KVMCloneClient(lab_config) as client:
            result = await client.clone_vm(
                "alpha",
                "beta",
                "db01",
                new_name=name,
                idempotent=True,
                on_event=events.append,
                check=True,
            )
        assert result.resumed_from is None and result.bytes_reused == 0
        why = [e.message for e in events if e.job_id == old_job and "cannot resume" in e.message]
        assert why and "changed size" in why[0], [e.message for e in events]
        _assert_cloned(lab, clean_beta, name)
    finally:
        os.truncate(data, size)
