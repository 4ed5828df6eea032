"""Counting (and timing) the inventory module's full reads and single-VM reads in this process."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import kvm_clone_tui.engine.inventory as inventory_module

# The real functions, captured before any wrapping (the counters must not see these reads).
ORIGINAL_READ_INVENTORY = inventory_module.read_inventory
ORIGINAL_READ_ONE_VM = inventory_module.read_one_vm


def counter_free_read(conn: Any, host: str) -> Any:
    """A full read that the counters do not see (for the final consistency check)."""
    return ORIGINAL_READ_INVENTORY(conn, host)


@dataclass
class ReadCounter:
    """Counts (and times) calls of ``read_inventory_parallel`` (a full read) and ``read_one_vm``
    in this process."""

    full: int = 0
    single: int = 0
    full_seconds: list[float] = field(default_factory=list)
    single_seconds: list[float] = field(default_factory=list)
    single_spans: list[tuple[str, float, float]] = field(default_factory=list)  # monotonic
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> tuple[int, int]:
        """(full reads, single-VM reads) so far."""
        with self.lock:
            return self.full, self.single


@contextlib.contextmanager
def counting_reads() -> Iterator[ReadCounter]:
    """Wrap the inventory module's read functions with counters for the duration."""
    counter = ReadCounter()
    original_full = inventory_module.read_inventory_parallel
    original_one = inventory_module.read_one_vm

    async def full(conn: Any, host: str) -> Any:
        t0 = time.perf_counter()
        try:
            return await original_full(conn, host)
        finally:
            with counter.lock:
                counter.full += 1
                counter.full_seconds.append(time.perf_counter() - t0)

    def one(conn: Any, name: str) -> Any:
        t0 = time.monotonic()
        try:
            return original_one(conn, name)
        finally:
            t1 = time.monotonic()
            with counter.lock:
                counter.single += 1
                counter.single_seconds.append(t1 - t0)
                counter.single_spans.append((name, t0, t1))

    inventory_module.read_inventory_parallel = full  # type: ignore[assignment]
    inventory_module.read_one_vm = one
    try:
        yield counter
    finally:
        inventory_module.read_inventory_parallel = original_full
        inventory_module.read_one_vm = original_one
