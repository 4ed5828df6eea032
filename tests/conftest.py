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


# The original kvm-clone's `pytest -m unit|integration|slow` select what their names say:
# integration = needs the lab (the `lab` fixture), unit = everything else, slow = the modules
# listed here, whose tests copy or boot real VMs and take seconds each.
SLOW_MODULES = {
    "test_clone_cpu_tpm.py",
    "test_clone_resume.py",
    "test_lab.py",
    "test_lab_guest.py",
    "test_live_clone.py",
    "test_original_readme.py",
    "test_sync.py",
    "test_sync_bitmap.py",
    "test_sync_index.py",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test unit or integration (by the lab fixture), and the slow ones slow."""
    for item in items:
        needs_lab = "lab" in getattr(item, "fixturenames", ())
        item.add_marker(pytest.mark.integration if needs_lab else pytest.mark.unit)
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
