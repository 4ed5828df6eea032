"""Moved to :mod:`kvm_clone_tui.api.validation`; this name stays for code that imported it here."""

from kvm_clone_tui.api.validation import *  # noqa: F403
