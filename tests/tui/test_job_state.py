"""What the jobs panel makes of the engine's events (no UI, no hosts)."""

from __future__ import annotations

from kvm_clone_tui.api.options import CloneOptions
from kvm_clone_tui.engine.progress import DiskProgress, JobEvent
from kvm_clone_tui.tui.clone.job_state import JobState
from kvm_clone_tui.tui.common.progress import RATE_SAMPLES, FileState, format_duration
from tests.tui.fake_clone import T0, fake_plan, lab_like_clone_source

MiB = 1 << 20


def plan_for(vm: str) -> JobState:
    inventories = lab_like_clone_source().inventories
    return JobState(fake_plan(inventories, "alpha", "beta", vm, CloneOptions(new_name="x")))


def test_progress_and_rate_history_per_file() -> None:
    job = plan_for("db01")
    assert list(job.files) == ["vda", "vdb"] and job.done_bytes == 0
    vda = DiskProgress("vda", 4 * MiB, 12 * MiB, 2 * MiB, 4.0)
    vdb = DiskProgress("vdb", 0, 4 * MiB, 0.0, None)
    assert job.apply(JobEvent(job.plan.job_id, "copy", "", (vda, vdb), time=T0)) is None
    assert list(job.files["vda"].rates) == [2 * MiB] and not job.files["vdb"].rates
    assert job.files["vda"].stats() == "4.0 MiB / 12.0 MiB · 2.0 MiB/s · ETA 0:04"
    assert job.files["vdb"].stats() == "0 B / 4.0 MiB · waiting"
    assert job.summary() == "25% of 16.0 MiB · relay"
    job.apply(JobEvent(job.plan.job_id, "copy", "", (vda, vdb), time=T0 + 1))
    assert len(job.files["vda"].rates) == 1  # the same report again: no new sample

    state = FileState("vda", 100)
    for done in range(1, RATE_SAMPLES + 10):
        state.update(DiskProgress("vda", done, 100, float(done), None))
    assert len(state.rates) == RATE_SAMPLES and state.rates[-1] == RATE_SAMPLES + 9
    state.update(DiskProgress("vda", 100, 100, 1.0, 0.0, finished=True))
    assert state.fraction == 1.0 and state.stats().endswith("verified")


def test_log_lines_are_styled_by_step() -> None:
    job = plan_for("web01")
    first = job.apply(JobEvent(job.plan.job_id, "stage", "copying 1 file(s)", time=T0))
    warning = job.apply(JobEvent(job.plan.job_id, "warning", "careful", time=T0 + 65))
    failed = job.apply(JobEvent(job.plan.job_id, "failed", "it broke", time=T0 + 3700))
    assert first is not None and warning is not None and failed is not None
    assert first.plain == " 0:00 stage    copying 1 file(s)"
    assert warning.plain == " 1:05 warning  careful"
    assert failed.plain.startswith("1:01:40 failed")
    assert any(span.style == "yellow" for span in warning.spans)
    assert any(span.style == "bold red" for span in failed.spans)
    assert job.title == "web01 (alpha) → beta as x"


def test_durations() -> None:
    assert [format_duration(s) for s in (None, -1, 0, 59.6, 61, 3600 * 2 + 5)] == [
        "-",
        "-",
        "0:00",
        "1:00",
        "1:01",
        "2:00:05",
    ]
