"""The hosts side by side: a pane per host (``HostPane``, ``VMTable``, drag source), the live
feeds from each host's tracker, the filter line, the status line, the VM details and add-host
screens, and the messages a pane sends to the app."""
