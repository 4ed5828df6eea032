"""The options of a clone and of a sync, shared by the CLI, the Python API and the TUI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kvm_clone_tui.api.config import Config

CompressChoice = Literal["auto", "on", "off"]
TransferChoice = Literal["auto", "direct", "relay"]
SYNC_BLOCK_SIZE = 64 << 10  # the unit a hash sync compares and an index records


@dataclass(frozen=True)
class CloneOptions:
    """How to clone; defaults come from the ``clone`` section of the configuration."""

    new_name: str | None = None  # None: the source VM's name
    pool: str | None = None  # None: clone.pool, else the destination host's default_pool
    force: bool = False  # replace an existing destination VM, after the copy is verified
    idempotent: bool = False  # already cloned: succeed without copying
    start: bool = False
    preserve_mac: bool = False
    bandwidth_limit: int | None = None  # bytes per second, per disk stream
    compress: CompressChoice = "auto"
    transfer: TransferChoice = "auto"
    parallel: int = 2
    verify: bool = True
    no_progress_timeout: float = 120.0
    checkpoint: bool = True  # leave a checkpoint on the source so that syncs use bitmap mode

    @classmethod
    def from_config(cls, config: Config, **overrides: object) -> CloneOptions:
        """Options with the config's defaults, then ``overrides`` (None values are ignored)."""
        clone = config.clone
        values: dict[str, object] = {
            "pool": clone.pool,
            "start": clone.start,
            "preserve_mac": clone.preserve_mac,
            "bandwidth_limit": clone.bandwidth_limit_bytes,
            "compress": clone.compress,
            "transfer": clone.transfer,
            "parallel": clone.parallel,
            "verify": clone.verify,
            "no_progress_timeout": float(clone.no_progress_timeout),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SyncOptions:
    """How to sync."""

    target_name: str | None = None  # the clone's name on the destination (default: VM's name)
    mode: str = "auto"  # auto | bitmap | hash
    bandwidth_limit: int | None = None
    verify: bool = True
    parallel: int = 2
    block_size: int = SYNC_BLOCK_SIZE
    no_progress_timeout: float = 120.0
    checkpoint: bool = False  # keep what the sync overwrites, so that it can be reverted
    transfer: str = "auto"  # auto | direct | relay, as for a clone
