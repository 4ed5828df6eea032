"""kvm-clone: clone and synchronise KVM virtual machines between libvirt hosts over SSH."""

__version__ = "0.1.0"
