"""Series of timings: min / median / max."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """min / median / max of a series of seconds."""

    values: tuple[float, ...]

    @property
    def min(self) -> float:
        """Smallest value."""
        return min(self.values)

    @property
    def median(self) -> float:
        """Median value."""
        return statistics.median(self.values)

    @property
    def max(self) -> float:
        """Largest value."""
        return max(self.values)

    def ms(self) -> str:
        """``min / median / max`` in milliseconds."""
        return f"{self.min * 1000:.0f} / {self.median * 1000:.0f} / {self.max * 1000:.0f} ms"

    def s(self) -> str:
        """``min / median / max`` in seconds."""
        return f"{self.min:.2f} / {self.median:.2f} / {self.max:.2f} s"
