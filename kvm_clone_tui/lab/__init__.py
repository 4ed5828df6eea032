"""A local multi-host KVM lab: libvirtd + QEMU + sshd hosts in mount namespaces on one machine.

The tests, the demo and the benchmarks run on it (docs/lab.md); the engine never imports it, only
the CLI's `lab` command and the TUI's start-up (to find a running lab's config) do.
A new kind of host (a login, a storage, a hostile source) is added here and the suite run on it.
"""
