"""The client facade: ``async with KVMCloneClient() as client: await client.list_vms([...])``.

The UIs and the Python API hold this object. It keeps one connection per host and hands the
work to the engine, which it imports only inside its methods: importing this module (or the
TUI, or the CLI) loads neither libvirt nor asyncssh; they load when a host is first reached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING

from kvm_clone_tui.api.config import Config, load_config
from kvm_clone_tui.api.errors import HostError, KVMCloneError
from kvm_clone_tui.api.events import JobEvent
from kvm_clone_tui.api.models import HostInventory, HostListing, VMState
from kvm_clone_tui.api.options import CloneOptions, SyncOptions
from kvm_clone_tui.api.plans import ClonePlan, SyncPlan
from kvm_clone_tui.api.results import CloneResult, RevertResult, SyncResult, UnfinishedJob
from kvm_clone_tui.api.validation import ValidationError, parse_host_spec

if TYPE_CHECKING:
    from kvm_clone_tui.engine.host_port import Host
    from kvm_clone_tui.engine.inventory import InventoryTracker
    from kvm_clone_tui.engine.journal import Journal
    from kvm_clone_tui.engine.registry import HostRegistry
    from kvm_clone_tui.engine.ssh import SSHSettings

__all__ = ["HostListing", "KVMCloneClient", "unfinished_jobs"]


def unfinished_jobs(*, include_running: bool = False) -> list[UnfinishedJob]:
    """The jobs that neither finished nor were rolled back, oldest first (``resume --list``).

    Jobs another live kvm-clone process still runs are left out unless ``include_running``
    (they are then marked ``running``).
    """
    from kvm_clone_tui.engine.journal import unfinished
    from kvm_clone_tui.engine.resume import resume_blocker

    idle = {j.record.job_id for j in unfinished()}
    jobs = []
    for journal in unfinished(include_running=include_running):
        record = journal.record
        jobs.append(
            UnfinishedJob(
                job_id=record.job_id,
                state=record.state,
                vm=record.vm,
                source_host=record.source_host,
                dest_host=record.dest_host,
                new_name=record.new_name,
                created=record.created,
                owner_pid=record.owner_pid,
                running=record.job_id not in idle,
                blocker=resume_blocker(record),
            )
        )
    return jobs


class KVMCloneClient:
    """Connections to hosts, opened on first use and shared by everything until closed.

    The connections live in the engine's hosts registry (``engine/registry.py``), built on
    first use; the engine's operations get the registry, never this object.
    """

    def __init__(self, config: Config | None = None, *, ssh: SSHSettings | None = None) -> None:
        self.config = config if config is not None else load_config()
        self._ssh_settings = ssh
        self._registry: HostRegistry | None = None

    @property
    def ssh_settings(self) -> SSHSettings:
        """How hosts are reached: the ``ssh=`` given, else the ``ssh`` section of the config."""
        if self._ssh_settings is None:
            from kvm_clone_tui.engine.registry import ssh_settings

            self._ssh_settings = ssh_settings(self.config)
        return self._ssh_settings

    @property
    def hosts(self) -> HostRegistry:
        """The engine's hosts registry (built on first use: this loads asyncssh and libvirt)."""
        if self._registry is None:
            from kvm_clone_tui.engine.registry import HostRegistry

            self._registry = HostRegistry(self.config, self.ssh_settings)
        return self._registry

    @property
    def connected(self) -> int:
        """How many host connections are open or being opened."""
        return len(self._registry) if self._registry is not None else 0

    async def __aenter__(self) -> KVMCloneClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def host(self, name: str) -> Host:
        """The connected host ``name`` (one SSH login per host, shared by all callers)."""
        return await self.hosts.host(name)

    async def tracker(self, name: str) -> InventoryTracker:
        """The live inventory of host ``name`` (read once, then kept current by events)."""
        return await self.hosts.tracker(name)

    async def inventory(self, name: str, *, fresh: bool = True) -> HostInventory:
        """Host ``name``'s VMs and pools; ``fresh`` re-reads it instead of using the tracker."""
        return await self.hosts.inventory(name, fresh=fresh)

    async def domain_xml(self, host: str, vm: str, *, inactive: bool = False) -> str:
        """The domain XML of VM ``vm`` on ``host`` (the live definition unless ``inactive``)."""
        return await (await self.host(host)).domain_xml(vm, inactive=inactive)

    async def clone_sync_state(self, host: str, vm: str) -> str | None:
        """The ``sync-state`` a clone's own metadata records (``in-progress`` after a sync that
        did not complete), None when it records none."""
        from kvm_clone_tui.engine.domain_rewrite import read_clone_metadata

        return read_clone_metadata(await self.domain_xml(host, vm)).get("sync-state")

    async def close_host(self, name: str) -> None:
        """Close the connection to one host (it reconnects on next use)."""
        if self._registry is not None:
            await self._registry.close_host(name)

    async def list_vms(
        self, hosts: Sequence[str], *, status: VMState | None = None
    ) -> list[HostListing]:
        """The VMs of each host, read in parallel; a failing host reports its error."""
        for name in hosts:
            parse_host_spec(name)  # all names are checked before any connection is made

        async def one(name: str) -> HostListing:
            try:
                inventory = await self.inventory(name)
            except (HostError, ValidationError) as exc:
                error = exc if isinstance(exc, KVMCloneError) else HostError(name, str(exc))
                return HostListing(name, None, error)
            if status is not None:
                inventory = replace(
                    inventory, vms=tuple(v for v in inventory.vms if v.state is status)
                )
            return HostListing(name, inventory)

        return list(await asyncio.gather(*(one(n) for n in hosts)))

    async def plan_clone(
        self,
        source: str,
        dest: str,
        vm: str,
        options: CloneOptions | None = None,
        **overrides: object,
    ) -> ClonePlan:
        """Check a clone and decide everything about it, without copying (``--dry-run``)."""
        from kvm_clone_tui.engine.plan import build_plan

        options = options or CloneOptions.from_config(self.config, **overrides)
        return await build_plan(self.hosts, source, dest, vm, options)

    async def clone_vm(
        self,
        source: str | None = None,
        dest: str | None = None,
        vm: str | None = None,
        options: CloneOptions | None = None,
        *,
        on_event: Callable[[JobEvent], None] | None = None,
        auto_rollback: bool = True,
        check: bool = False,
        source_host: str | None = None,
        dest_host: str | None = None,
        vm_name: str | None = None,
        compress: bool | str | None = None,
        **overrides: object,
    ) -> CloneResult:
        """Clone VM ``vm`` from host ``source`` to host ``dest``.

        ``overrides`` are CloneOptions fields (``new_name="web02"``, ``start=True``...);
        ``on_event`` receives the transaction log and per-disk progress. The original
        kvm-clone's keywords work too: ``source_host``, ``dest_host``, ``vm_name``, and
        ``compress=True/False`` (``"on"``/``"off"``). The result says ``success`` and, when it
        is False, ``error``: a refused plan (nothing copied) or the failure that rolled it back.
        With ``check=True`` those raise instead (CloneRefused, or the error that made it roll
        back: CloneFailed, without rolling back, when ``auto_rollback`` is False), as the CLI
        and the TUI use it. With ``idempotent``, an interrupted run of the same clone is
        resumed (``engine/resume.py``).
        """
        source, dest, vm = _names(source, source_host, dest, dest_host, vm, vm_name)
        if isinstance(compress, bool):  # the original's compress=True/False
            compress = "on" if compress else "off"
        if compress is not None:
            overrides["compress"] = compress
        options = options or CloneOptions.from_config(self.config, **overrides)
        try:
            return await self._clone(source, dest, vm, options, on_event, auto_rollback)
        except (KVMCloneError, ValidationError) as exc:
            if check:
                raise
            new_name = options.new_name or vm
            return CloneResult.failure(
                source, dest, vm, new_name, str(exc), job_id=getattr(exc, "job_id", "")
            )

    async def _clone(
        self,
        source: str,
        dest: str,
        vm: str,
        options: CloneOptions,
        on_event: Callable[[JobEvent], None] | None,
        auto_rollback: bool,
    ) -> CloneResult:
        from kvm_clone_tui.engine.clone import run_clone
        from kvm_clone_tui.engine.journal import unfinished

        if options.idempotent:
            from kvm_clone_tui.engine.resume import clone_or_resume

            return await clone_or_resume(
                self.hosts, source, dest, vm, options, on_event, auto_rollback=auto_rollback
            )
        new_name = options.new_name or vm
        for journal in unfinished():
            record = journal.record
            if record.dest_host == dest and record.new_name == new_name:
                await self.recover_job(journal, on_event=on_event)
        plan = await self.plan_clone(source, dest, vm, options)
        return await run_clone(self.hosts, plan, on_event, auto_rollback=auto_rollback)

    async def run_plan(
        self,
        plan: ClonePlan,
        *,
        on_event: Callable[[JobEvent], None] | None = None,
        auto_rollback: bool = True,
    ) -> CloneResult:
        """Carry out a plan from :meth:`plan_clone` (e.g. after the operator confirmed it)."""
        from kvm_clone_tui.engine.clone import run_clone

        return await run_clone(self.hosts, plan, on_event, auto_rollback=auto_rollback)

    async def plan_sync(
        self, source: str, dest: str, vm: str, options: SyncOptions | None = None
    ) -> SyncPlan:
        """Check a sync of an earlier clone and say what it would compare (``--dry-run``)."""
        from kvm_clone_tui.engine.sync_plan import build_sync_plan

        return await build_sync_plan(self.hosts, source, dest, vm, options or self.sync_options())

    async def sync_vm(
        self,
        source: str | None = None,
        dest: str | None = None,
        vm: str | None = None,
        options: SyncOptions | None = None,
        *,
        on_event: Callable[[JobEvent], None] | None = None,
        check: bool = False,
        source_host: str | None = None,
        dest_host: str | None = None,
        vm_name: str | None = None,
        **overrides: object,
    ) -> SyncResult:
        """Bring the clone of ``vm`` on ``dest`` up to date, moving only what changed.

        The original kvm-clone's keywords work too (``source_host``, ``dest_host``,
        ``vm_name``, and ``new_name`` for the clone's name). The result says ``success`` and
        ``error``; with ``check=True`` a refusal or failure raises (SyncRefused, ...) instead.
        """
        from kvm_clone_tui.engine.sync import run_sync

        source, dest, vm = _names(source, source_host, dest, dest_host, vm, vm_name)
        if "new_name" in overrides:
            overrides.setdefault("target_name", overrides.pop("new_name"))
        options = options or self.sync_options(**overrides)
        try:
            plan = await self.plan_sync(source, dest, vm, options)
            return await run_sync(self.hosts, plan, on_event)
        except (KVMCloneError, ValidationError) as exc:
            if check:
                raise
            return SyncResult.failure(source, dest, vm, options.target_name or vm, str(exc))

    async def run_sync_plan(
        self, plan: SyncPlan, on_event: Callable[[JobEvent], None] | None = None
    ) -> SyncResult:
        """Carry out a plan from :meth:`plan_sync` (e.g. after the operator confirmed it)."""
        from kvm_clone_tui.engine.sync import run_sync

        return await run_sync(self.hosts, plan, on_event)

    async def revert_sync(self, dest: str, target: str) -> RevertResult:
        """Put the clone ``target`` on ``dest`` back as it was before its last sync made with
        ``checkpoint=True`` (refused when the clone changed since)."""
        from kvm_clone_tui.engine.sync_undo import revert

        return await revert(self.hosts, dest, target)

    def sync_options(self, **overrides: object) -> SyncOptions:
        """Sync options with the config's defaults, then ``overrides`` (None ignored)."""
        values: dict[str, object] = {
            "mode": self.config.sync.mode,
            "transfer": self.config.clone.transfer,
            "bandwidth_limit": self.config.clone.bandwidth_limit_bytes,
            "verify": self.config.clone.verify,
            "parallel": self.config.clone.parallel,
            "no_progress_timeout": float(self.config.clone.no_progress_timeout),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return SyncOptions(**values)  # type: ignore[arg-type]

    async def resume_job(
        self,
        job_id: str,
        on_event: Callable[[JobEvent], None] | None = None,
        *,
        auto_rollback: bool = True,
    ) -> CloneResult:
        """Finish an interrupted clone from the files it staged (``kvm-clone resume JOB``).

        Only differing or missing blocks are sent; a job that cannot resume (live clone, begun
        commit, changed source) is rolled back and cloned afresh. Raises ResumeError for an
        unknown job or one that another live process still runs.
        """
        from kvm_clone_tui.engine.resume import resume_job

        return await resume_job(self.hosts, job_id, on_event, auto_rollback=auto_rollback)

    async def rollback_job(
        self, job_id: str, on_event: Callable[[JobEvent], None] | None = None
    ) -> None:
        """Roll back an unfinished job by id (one kept by ``auto_rollback=False``)."""
        from kvm_clone_tui.engine.journal import unfinished

        for journal in unfinished():
            if journal.record.job_id == job_id:
                await self.recover_job(journal, on_event)
                return
        raise KVMCloneError(f"no unfinished job {job_id!r}")

    async def recover_job(
        self, journal: Journal, on_event: Callable[[JobEvent], None] | None = None
    ) -> None:
        """Roll back an interrupted job found in the journal (after a crash or kill -9)."""
        from kvm_clone_tui.engine.clone import recover_job

        await recover_job(self.hosts, journal, on_event)

    async def recover(self, on_event: Callable[[JobEvent], None] | None = None) -> list[str]:
        """Roll back every interrupted job; return their ids."""
        from kvm_clone_tui.engine.journal import unfinished

        done = []
        for journal in unfinished():
            await self.recover_job(journal, on_event)
            done.append(journal.record.job_id)
        return done

    async def close(self) -> None:
        """Close every connection."""
        if self._registry is not None:
            await self._registry.close()


def _names(
    source: str | None,
    source_host: str | None,
    dest: str | None,
    dest_host: str | None,
    vm: str | None,
    vm_name: str | None,
) -> tuple[str, str, str]:
    """(source, dest, vm) from either spelling: ``source`` or the original's ``source_host``..."""
    chosen = []
    for name, given, original in (
        ("source", source, source_host),
        ("dest", dest, dest_host),
        ("vm", vm, vm_name),
    ):
        if given is not None and original is not None and given != original:
            raise TypeError(f"{name} given twice, with different values: {given!r}, {original!r}")
        value = given if given is not None else original
        if value is None:
            raise TypeError(f"missing the {name} argument (or its original name)")
        chosen.append(value)
    return chosen[0], chosen[1], chosen[2]
