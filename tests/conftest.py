"""Shared fixtures: the lab the integration tests run against."""

from __future__ import annotations

import pytest

from kvm_clone_tui.lab.layout import LabLayout, default_cache_dir, default_state_dir
from kvm_clone_tui.lab.manager import Lab


@pytest.fixture(scope="session")
def lab() -> Lab:
    """The running lab (``kvm-clone lab up``; ``make test`` starts it). Fails when it is down."""
    lab = Lab(LabLayout(default_state_dir()), default_cache_dir())
    statuses = lab.status()
    if not statuses or not all(s.up for s in statuses):
        pytest.fail(
            f"the lab in {lab.layout.root} is not up: run `kvm-clone lab up` (make test does)",
            pytrace=False,
        )
    return lab
