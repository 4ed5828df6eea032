"""``python -m kvm_clone_tui`` runs the ``kvm-clone`` command."""

from kvm_clone_tui.cli.main import main

raise SystemExit(main())
