"""The command palette's kvm-clone commands (ctrl+p): each runs one of the app's actions."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

#: (title, help, app action); offered only while the app's check_action says it can run.
PALETTE_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("Add host", "Open another host in a new pane", "add_host"),
    ("Remove host", "Close the current host's pane (asks first)", "remove_host"),
    ("Refresh host", "Read the current host again, or retry it after a failure", "refresh"),
    ("Filter VMs", "Show only the VMs whose name or state matches a regex", "filter"),
    ("Clear filter", "Show every VM again", "clear_filter"),
    ("Clone VMs", "Clone the marked VMs (or the current one) to a host you pick", "clone"),
    (
        "Sync VM",
        "Bring the current VM's clone up to date on a host you pick (only what changed)",
        "sync",
    ),
    ("Sync again", "Sync the last synced VM and clone again, without asking", "sync_again"),
    (
        "Revert last sync",
        "Put the clone back as it was before its last sync made with a checkpoint (asks first)",
        "revert_sync",
    ),
    (
        "Resume kept job",
        "Finish a failed clone from the files it kept: only missing blocks move",
        "resume_job",
    ),
    ("Show/hide jobs", "The jobs panel: progress and log of every clone", "toggle_jobs"),
    (
        "Cancel job",
        "Cancel the focused job (asks first), or decide about a failed one",
        "cancel_job",
    ),
    ("Help: keys", "Every key binding", "help"),
    ("Toggle dark/light theme", "Switch between the dark and the light theme", "toggle_theme"),
)


class KVMCloneCommands(Provider):
    """Offers :data:`PALETTE_COMMANDS` that the app can run right now."""

    def _available(self) -> list[tuple[str, str, str]]:
        return [c for c in PALETTE_COMMANDS if self.app.check_action(c[2], ()) is True]

    async def discover(self) -> Hits:
        """Every available command, when nothing is typed yet."""
        for title, help_text, action in self._available():
            yield DiscoveryHit(title, partial(self.app.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        """The available commands whose title matches ``query`` (fuzzy)."""
        matcher = self.matcher(query)
        for title, help_text, action in self._available():
            score = matcher.match(title)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(title),
                    partial(self.app.run_action, action),
                    help=help_text,
                )
