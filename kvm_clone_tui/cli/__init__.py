"""The ``kvm-clone`` command line: argument parsing and output, on top of the engine."""
