"""Moved to :mod:`kvm_clone_tui.api.errors`; this name stays for code that imported it here."""

from kvm_clone_tui.api.errors import *  # noqa: F403
