"""Moved to :mod:`kvm_clone_tui.api.units`; this name stays for code that imported it here."""

from kvm_clone_tui.api.units import *  # noqa: F403
