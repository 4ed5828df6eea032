"""Moved to :mod:`kvm_clone_tui.api.models`; this name stays for code that imported it here."""

from kvm_clone_tui.api.models import *  # noqa: F403
