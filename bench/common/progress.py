"""Progress lines on stderr, time-stamped (stdout carries a benchmark's results)."""

from __future__ import annotations

import sys
import time


def log(message: str) -> None:
    """``[HH:MM:SS] message`` on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
