"""The engine: plans, clones, syncs and reverts, carried out on hosts over asyncssh and libvirt.

It imports its values and errors from :mod:`kvm_clone_tui.api` and never a UI (``lint-imports``);
the API's ``KVMCloneClient`` facade imports it when it first reaches a host.
"""
