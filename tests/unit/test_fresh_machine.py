"""A fresh machine: the README's commands install the Debian packages before anything needs them.

These read the Makefile's plan (`make -n`), so they hold on any machine, packages installed or not.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def planned(target: str) -> list[str]:
    """The commands `make TARGET` would run on a machine where nothing is installed yet."""
    done = subprocess.run(
        ["make", "-n", "-B", "--no-print-directory", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def first(lines: list[str], needle: str) -> int:
    return next(i for i, line in enumerate(lines) if needle in line)


@pytest.mark.parametrize("target", ["test", "demo", "lint", "typecheck", "venv", "screenshots"])
def test_the_debian_packages_come_before_any_pip_install(target: str) -> None:
    lines = planned(target)
    assert first(lines, "dpkg-query") < first(lines, "pip install"), "\n".join(lines)


def test_the_venv_is_installed_from_the_hash_checked_lock() -> None:
    lines = planned("venv")
    installs = [line for line in lines if "pip install" in line]
    assert "--require-hashes -r requirements/dev.lock" in installs[0]
    assert all("--no-deps" in line for line in installs[1:])  # nothing resolved beyond the lock
    assert (ROOT / "requirements" / "dev.lock").read_text().count("--hash=sha256:") > 30
