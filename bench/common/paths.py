"""Where the checkout and its kvm-clone are: the benchmarks run the CLI of the checkout's venv."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KVM_CLONE = ROOT / ".venv" / "bin" / "kvm-clone"
