"""What the main screen shows when no host is open."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

HELP = """\
No hosts yet.

Press  a  to add one: an ssh alias from ~/.ssh/config, a host from kvm-clone's config, or \
[user@]host[:port].

Or name hosts when starting:  kvm-clone tui alpha root@10.0.0.5
or make them the default:     kvm-clone config set default_hosts alpha,beta
"""


class EmptyState(Static):
    """How to add a host."""

    def __init__(self) -> None:
        super().__init__(Content(HELP), id="empty")
