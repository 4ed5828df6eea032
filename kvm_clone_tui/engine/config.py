"""Moved to :mod:`kvm_clone_tui.api.config`; this name stays for code that imported it here."""

from kvm_clone_tui.api.config import *  # noqa: F403
