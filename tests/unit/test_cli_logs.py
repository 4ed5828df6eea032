"""The CLI's logs: text on whatever stderr is at the time, or one JSON object per event."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import pytest

from kvm_clone_tui.api.events import DiskProgress, JobEvent
from kvm_clone_tui.cli import logs


def test_text_warnings_go_to_the_stderr_of_the_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    logs.configure(None, None, environ={})
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)  # after configure, as the TUI captures it
    logging.getLogger("kvm_clone_tui.engine.ssh").warning("recorded new host key")
    logging.getLogger("kvm_clone_tui.engine.ssh").info("not shown in text mode")
    assert captured.getvalue() == "kvm-clone: warning: recorded new host key\n"


def test_json_lines_carry_the_jobs_context(tmp_path: Path) -> None:
    path = tmp_path / "log"
    assert logs.configure(None, None, environ={logs.FORMAT_ENV: "json", logs.FILE_ENV: str(path)})
    on_event = logs.job_logger("clone", host="beta", source="alpha", dest="beta", vm="web01")
    on_event(JobEvent("j1", "copy", "", disks=(DiskProgress("vda", 5, 10, 2.4, 2.0),)))
    on_event(JobEvent("j1", "failed", "no space"))
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first["step"] == "copy" and first["bytes_done"] == 5 and first["job"] == "j1"
    assert first["disks"] == [{"target": "vda", "done": 5, "total": 10, "rate": 2}]
    assert second["level"] == "error" and second["message"] == "no space"
    assert second["host"] == "beta" and second["source"] == "alpha" and second["vm"] == "web01"
    logs.configure(None, None, environ={})


def test_a_bad_format_in_the_environment_names_the_variable() -> None:
    with pytest.raises(SystemExit, match="KVM_CLONE_LOG_FORMAT must be text or json"):
        logs.configure(None, None, environ={logs.FORMAT_ENV: "yaml"})
