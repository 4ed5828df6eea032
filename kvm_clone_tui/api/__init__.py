"""The API layer the UIs stand on: options, plans, results, events, inventory models, errors,
configuration, the TUI's ports and the KVMCloneClient facade. TUI and CLI import only this; the
facade imports the engine (libvirt, asyncssh) lazily, when it first reaches a host."""

from __future__ import annotations

from kvm_clone_tui.api.client import KVMCloneClient, unfinished_jobs
from kvm_clone_tui.api.config import Config, ConfigError, load_config
from kvm_clone_tui.api.errors import (
    CloneFailed,
    CloneRefused,
    HostError,
    KVMCloneError,
    ResumeError,
    RevertRefused,
    SyncRefused,
)
from kvm_clone_tui.api.events import DiskProgress, JobEvent
from kvm_clone_tui.api.models import VM, HostInventory, HostListing, InventoryEvent, VMState
from kvm_clone_tui.api.options import CloneOptions, SyncOptions
from kvm_clone_tui.api.plans import ClonePlan, SyncPlan
from kvm_clone_tui.api.results import CloneResult, RevertResult, SyncResult, UnfinishedJob
from kvm_clone_tui.api.validation import ValidationError

__all__ = [
    "VM",
    "CloneFailed",
    "CloneOptions",
    "ClonePlan",
    "CloneRefused",
    "CloneResult",
    "Config",
    "ConfigError",
    "DiskProgress",
    "HostError",
    "HostInventory",
    "HostListing",
    "InventoryEvent",
    "JobEvent",
    "KVMCloneClient",
    "KVMCloneError",
    "ResumeError",
    "RevertRefused",
    "RevertResult",
    "SyncOptions",
    "SyncPlan",
    "SyncRefused",
    "SyncResult",
    "UnfinishedJob",
    "VMState",
    "ValidationError",
    "load_config",
    "unfinished_jobs",
]
