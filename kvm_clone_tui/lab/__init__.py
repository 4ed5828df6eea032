"""A local multi-host KVM lab: libvirtd + QEMU + sshd hosts in mount namespaces on one machine."""
