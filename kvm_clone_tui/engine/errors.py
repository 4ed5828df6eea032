"""Errors the engine raises: each names the host it concerns and says what to do."""

from __future__ import annotations


class KVMCloneError(Exception):
    """Base of every error kvm-clone reports to the operator."""


class HostError(KVMCloneError):
    """Something failed on or on the way to one host."""

    #: Short machine-readable kind, used in ``--output json``.
    kind = "host-error"

    def __init__(self, host: str, message: str) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host
        self.message = message


class HostUnreachableError(HostError):
    """The host did not answer (refused, unreachable, timed out), even after retries."""

    kind = "unreachable"


class AuthenticationError(HostError):
    """The host refused our credentials."""

    kind = "authentication"


class HostKeyError(HostError):
    """The host's key is unknown or has changed: never connected past this."""

    kind = "host-key"


class LibvirtError(HostError):
    """libvirt on the host failed or is not running."""

    kind = "libvirt"


class RemoteCommandError(HostError):
    """A command run on the host over SSH failed."""

    kind = "remote-command"
