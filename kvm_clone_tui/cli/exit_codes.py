"""The exit codes of every ``kvm-clone`` command (each command's EPILOG lists the ones it uses)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # the work failed (and was rolled back); for ``list``: a host could not be read
EXIT_HOST_FAILED = EXIT_FAILED
EXIT_USAGE = 2  # bad arguments or configuration: nothing was tried
EXIT_REFUSED = 4  # the plan has conflicts (or the revert is refused): nothing was changed
EXIT_INTERRUPTED = 130  # Ctrl-C
