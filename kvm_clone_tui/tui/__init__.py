"""The terminal UI: hosts side by side, their VMs live, cloned by key or drag and drop.

It stands on :mod:`kvm_clone_tui.api` only: it talks to hosts through the API's
``KVMCloneClient`` (or anything with the shapes of :mod:`kvm_clone_tui.api.ports`) and never
imports the engine, libvirt or asyncssh (``lint-imports``; ``tests/unit/test_layers.py``).
Nothing here is imported by ``kvm-clone`` until the UI is opened.

Where things are:

- ``app.py``: the app (layout, actions, routing of messages); ``app.tcss`` its styles.
- ``widgets/``: ``HostPane`` (one host: connection state, loading worker, events),
  ``VMTable`` (rows updated one at a time; marks; filter; columns fitted to the width; rows
  dragged out through the ``DragSource`` mixin), ``JobsPanel`` and ``JobView`` (one clone job:
  its worker, a progress line per file, its log), ``SyncView`` (one sync session: its runs),
  ``FilterBar``, ``StatusBar``, ``EmptyState``.
- ``screens/``: modal screens (VM details, add host, confirm, help generated from BINDINGS;
  the clone's ``DestinationScreen``, ``CloneDialog`` and the failed clone's ``RollbackScreen``).
- ``clone_flow.py``: the app's clone logic, from a pane's selection (``c``) or a drop to jobs,
  cancelling and the rollback prompt; ``clone_setup.py`` the dialog's form and its checks,
  ``plan_text.py`` a plan for people, ``job_state.py`` what a job's events add up to.
- ``sync_flow.py``: sync sessions (``s`` on a VM, ``r`` on a session, ``R`` anywhere);
  ``sync_session.py`` the remembered pairs and each run's numbers; ``widgets/sync_view.py`` a
  session in the jobs panel (built from the job view's parts); ``screens/sync_dialog.py`` the
  clone's name, the mode, the undo checkpoint and the live sync plan.
- ``source.py``: what the UI needs from the engine (``CloneSource`` for clones), and
  ``HostFeeds`` (one subscription per host tracker, events routed to the pane showing the host).
- ``commands.py``: the command palette's commands; ``messages.py``: messages between parts.

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
