"""The terminal UI: hosts side by side, their VMs live, cloned by key or drag and drop.

It stands on :mod:`kvm_clone_tui.api` only: it talks to hosts through the API's
``KVMCloneClient`` (or anything with the shapes of :mod:`kvm_clone_tui.api.ports`) and never
imports the engine, libvirt or asyncssh (``lint-imports``; ``tests/unit/test_layers.py``).
Nothing here is imported by ``kvm-clone`` until the UI is opened.

Where things are (by feature, as darrenburns/posting groups its widgets; decision 25):

- ``app.py``: the app (layout, actions, routing of messages); ``app.tcss`` its styles;
  ``palette.py`` the command palette's commands; ``startup.py`` which configuration and hosts
  it opens with (the ``tui`` subcommand itself is :mod:`kvm_clone_tui.cli.tui_cmd`);
  ``jobs_panel.py`` the jobs panel, where clone jobs and sync sessions run side by side;
  ``plan_text.py`` clone and sync plans for people.
- ``hosts/``: ``HostPane`` (one host: connection state, loading worker, events), ``VMTable``
  (rows updated one at a time; marks; filter; columns fitted to the width; rows dragged out
  through the ``DragSource`` mixin), ``HostFeeds`` (one subscription per host tracker, events
  routed to the pane showing the host), ``FilterBar``, ``StatusBar``, ``EmptyState``, the VM
  details and add-host screens, and the messages a pane sends to the app.
- ``clone/``: ``flow.py`` the app's clone logic, from a pane's selection (``c``) or a drop to
  jobs, cancelling and the rollback prompt; ``dialog.py`` the ``CloneDialog``, ``setup.py`` its
  form and checks; ``job_state.py`` what a job's events add up to, ``job_view.py`` the
  ``JobView`` (a progress line per file, its log); ``rollback.py`` the failed clone's
  ``RollbackScreen``.
- ``sync/``: ``flow.py`` sync sessions (``s`` on a VM, ``r`` on a session, ``R`` anywhere);
  ``session.py`` the remembered pairs and each run's numbers; ``view.py`` a session in the jobs
  panel; ``dialog.py`` the clone's name, the mode, the undo checkpoint and the live sync plan.
- ``common/``: what both share: ``JobStatus`` and its labels, per-file progress and log lines,
  ``FileRow``; the ``DestinationScreen``, ``ConfirmScreen`` and ``HelpScreen`` (generated from
  BINDINGS).
- What the UI needs from the engine are the ports of :mod:`kvm_clone_tui.api.ports`
  (``CloneSource`` for clones, ``SyncSource`` for syncs), re-exported by ``hosts/feeds.py``.

Cloning, in short: ``c`` asks where (``DestinationScreen``), a drop on another pane knows where;
``CloneDialog`` plans in a worker (``plan_clone``, again after each pause in typing) and starts
only conflict-free plans; each plan runs in its ``JobView``'s worker (``run_plan`` with
``auto_rollback=False``) whose ``JobEvent`` callbacks are posted back to the view as messages
and repainted on a timer. A failure that kept staged files (``CloneFailed``) opens the rollback
prompt (roll back, keep for resume, show log); cancelling a worker makes the engine roll back.
``r`` on a kept job runs ``resume_job`` in the same view (a new engine job adopts the staged
files; ``JobView.job_id`` follows it).

Syncing, in short: ``s`` asks where (``DestinationScreen``, the remembered host highlighted),
then the clone's name, the mode and the undo checkpoint (``SyncDialog``, prefilled from the
remembered pair or the config, planning with ``plan_sync`` after each pause); the pair and its
``SyncSettings`` are remembered for the app session and run ``sync_vm`` in its ``SyncView``'s
worker; ``r`` on that view (or ``R`` anywhere: the host panes keep ``r`` for refresh) runs the
last pair again without asking. ``u`` on a session (after ``ConfirmScreen``) runs
``revert_sync`` when the last run kept a checkpoint; a ``RevertRefused`` is logged, a
``SyncRefused``'s conflicts are logged in red (both are ``kvm_clone_tui.api.errors``). ``x``
cancels a running sync (``SyncFlow.cancel`` asks first); after any run that did not complete,
the view asks for the clone's ``sync-state`` from its metadata (through
``CloneStateSource.clone_sync_state``) and, while it says in-progress, shows the clone as
mid-sync: ``r`` resumes.

Big inventories: ``VMTable.show`` sizes its columns from the VMs' fields instead of letting
DataTable measure every cell, and holds the garbage collector off until the rows are painted
(``GCHold``); see the TUI section of docs/benchmarks.md.

Extension points: ``KVMCloneApp.selection()`` gives the marked VMs by host; a source
implementing ``DomainXMLSource`` makes the details screen show the domain XML, one implementing
``CloneSource`` makes cloning work, one implementing ``SyncSource`` sync sessions; a new key is
a ``Binding`` on the widget it acts on (help and footer follow) plus a ``PALETTE_COMMANDS`` line.
"""
