"""Logs: human text by default, or one JSON object per event (``--log-format json``).

Every command logs through the ``kvm_clone_tui`` logger: the engine's own messages (a host key
recorded, a lost event stream) and, for jobs (clone, sync, resume, revert), every step of the
transaction log and the byte counts of every progress event. ``--log-file`` sends them to a file
instead of stderr; ``KVM_CLONE_LOG_FORMAT`` and ``KVM_CLONE_LOG_FILE`` set the defaults.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from kvm_clone_tui.api.events import EventCallback, JobEvent

LOGGER = "kvm_clone_tui"
FORMAT_ENV = "KVM_CLONE_LOG_FORMAT"
FILE_ENV = "KVM_CLONE_LOG_FILE"
FORMATS = ("text", "json")
#: The fields of a JSON log line besides timestamp, level and message, when the event has them.
CONTEXT = ("command", "job", "host", "source", "dest", "vm", "step", "disks", "bytes_done")

log = logging.getLogger(LOGGER)
_STEP_LEVELS = {"failed": logging.ERROR, "warning": logging.WARNING, "rollback": logging.WARNING}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp (ISO 8601, UTC), level, message and the context."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT:
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes: the TUI captures it while it
    runs, so an engine warning cannot scribble over the screen."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass  # StreamHandler.__init__ sets it; the property always answers sys.stderr


class _Plain(logging.Formatter):
    """``kvm-clone: warning: ...``, like the commands' own messages."""

    def format(self, record: logging.LogRecord) -> str:
        return f"kvm-clone: {record.levelname.lower()}: {record.getMessage()}"


def add_arguments(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--log-format`` and ``--log-file``; on subcommands they default to the top level's."""
    default: Any = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=default,
        help=f"text (default) or json: one JSON object per event, with timestamp, level, job, "
        f"host, step, message and byte counts (also ${FORMAT_ENV})",
    )
    parser.add_argument(
        "--log-file",
        metavar="FILE",
        default=default,
        help=f"append the log to FILE instead of stderr (also ${FILE_ENV})",
    )


def configure(
    log_format: str | None, log_file: str | None, environ: Mapping[str, str] | None = None
) -> str:
    """Set up the ``kvm_clone_tui`` logger; return the format in effect.

    Text logs on stderr keep today's quiet default (warnings and errors; jobs show their own
    progress); JSON logs, and text logs written to a file, carry every job event too.
    """
    env = os.environ if environ is None else environ
    fmt = log_format or env.get(FORMAT_ENV) or "text"
    if fmt not in FORMATS:
        raise SystemExit(f"kvm-clone: error: {FORMAT_ENV} must be text or json (got {fmt!r})")
    path = log_file or env.get(FILE_ENV) or None
    handler: logging.Handler
    handler = logging.FileHandler(path, encoding="utf-8") if path else _Stderr()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif path:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    else:
        handler.setFormatter(_Plain())
    for old in list(log.handlers):
        log.removeHandler(old)
        old.close()
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO if fmt == "json" or path else logging.WARNING)
    return fmt


def job_logger(command: str, **context: str | None) -> EventCallback:
    """An ``on_event`` callback that logs every event of one job with its context."""
    fixed = {"command": command, **{k: v for k, v in context.items() if v is not None}}

    def on_event(event: JobEvent) -> None:
        level = _STEP_LEVELS.get(event.step, logging.INFO)
        if not log.isEnabledFor(level):
            return
        extra: dict[str, Any] = {**fixed, "job": event.job_id, "step": event.step}
        if event.disks:
            extra["disks"] = [
                {"target": d.target, "done": d.done, "total": d.total, "rate": round(d.rate)}
                for d in event.disks
            ]
            extra["bytes_done"] = sum(d.done for d in event.disks)
        log.log(level, event.message or event.step, extra=extra)

    return on_event


def both(*callbacks: EventCallback | None) -> EventCallback | None:
    """One callback calling each of ``callbacks`` that is not None (None when there are none)."""
    chosen = [c for c in callbacks if c is not None]
    if not chosen:
        return None
    if len(chosen) == 1:
        return chosen[0]

    def on_event(event: JobEvent) -> None:
        for callback in chosen:
            callback(event)

    return on_event
