"""The terminal UI: hosts side by side, their VMs live (``kvm-clone tui``).

It talks to hosts only through the engine's :class:`~kvm_clone_tui.engine.client.KVMCloneClient`
(or anything with the same ``tracker`` method, see :mod:`.source`) and never imports libvirt or
asyncssh. Nothing here is imported by ``kvm-clone`` until the UI is opened.

Where things are:

- ``app.py``: the app (layout, actions, routing of messages); ``app.tcss`` its styles.
- ``widgets/``: ``HostPane`` (one host: connection state, loading worker, events),
  ``VMTable`` (rows updated one at a time; marks; filter; columns fitted to the width),
  ``FilterBar``, ``StatusBar``, ``EmptyState``.
- ``screens/``: modal screens (VM details, add host, confirm, help generated from BINDINGS).
- ``source.py``: what the UI needs from the engine, and ``HostFeeds`` (one subscription per
  host tracker, events routed to the pane currently showing that host).
- ``commands.py``: the command palette's commands; ``messages.py``: messages between parts.

Extension points for the next steps: ``KVMCloneApp.selection()`` gives the marked VMs by host
(what a clone works on); the ``#bottom`` container under the panes takes a jobs panel; a source
implementing ``DomainXMLSource`` makes the details screen show the domain XML; a new key is a
``Binding`` on the widget it acts on (help and footer follow) plus a ``PALETTE_COMMANDS`` line.
"""
