"""Helpers the benchmarks share: labs, the machine, processes, workloads, digests and tables.

Built on ``kvm_clone_tui.lab`` (one lab implementation); nothing here imports from ``tests``.
A benchmark imports these modules, never another benchmark.
"""
