"""Benchmarks a person runs to measure kvm-clone against real libvirt hosts (docs/benchmarks.md).

Each benchmark is a module or package run from the repository root, as root, e.g.
``.venv/bin/python -m bench.clone_peers --runs 1``; their shared helpers are in ``bench.common``.
"""
