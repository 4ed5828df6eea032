"""Moved to :mod:`kvm_clone_tui.api.options`; this name stays for code that imported it here."""

from kvm_clone_tui.api.options import *  # noqa: F403
