"""The ``kvm-clone`` command line: one module per command, their JSON documents and logs.

It stands on :mod:`kvm_clone_tui.api` only (``lint-imports``), like the TUI; a new command is a
module here with ``add_parser`` and ``run``, registered in ``main.py`` (docs/architecture.md).
"""
