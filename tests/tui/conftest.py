"""Fixtures and helpers for the TUI tests."""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.pilot import Pilot

from kvm_clone_tui.api.config import Config, load_config
from kvm_clone_tui.lab.manager import Lab

SIZE = (160, 40)


@pytest.fixture
def lab_config(lab: Lab) -> Config:
    """The config `lab up` wrote (environment overrides ignored)."""
    return load_config(lab.layout.client_config, environ={})


@pytest.fixture
def clone_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests that clone: no SSH agent (plans take the relay route, whatever the machine
    has) and a private journal directory (no other test's unfinished jobs)."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("KVM_CLONE_STATE_DIR", str(tmp_path / "state"))


async def wait_until(
    pilot: Pilot[Any], condition: Callable[[], object], what: str, timeout: float = 30
) -> None:
    """Let the app run until ``condition()`` holds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        await pilot.pause(0.05)
    await pilot.pause()


def screen_text(app: App[Any]) -> str:
    """The text on the screen (from its SVG screenshot), one string."""
    svg = app.export_screenshot()
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


async def in_thread(fn: Callable[..., object], *args: object) -> object:
    """Run a blocking call (virsh on a lab host) without blocking the app's loop."""
    return await asyncio.to_thread(fn, *args)
