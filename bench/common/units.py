"""Byte units, and sizes as the benchmarks' options spell them (``20G``, ``512M``)."""

from __future__ import annotations

import argparse
import re

MiB, GiB = 1 << 20, 1 << 30


def mib(n: float) -> str:
    """Bytes as MiB with one decimal."""
    return f"{n / MiB:.1f}"


def parse_size(text: str) -> int:
    """``20G`` / ``200G`` / ``512M`` -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+)\s*([MGT])i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: use a number and M, G or T (20G)")
    return int(m.group(1)) << {"M": 20, "G": 30, "T": 40}[m.group(2).upper()]


def size_label(size: int) -> str:
    """Bytes -> ``20G`` (or ``512M``)."""
    return f"{size // GiB}G" if size % GiB == 0 else f"{size // MiB}M"
