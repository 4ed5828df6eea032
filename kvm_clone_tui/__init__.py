"""kvm-clone: clone and synchronise KVM virtual machines between libvirt hosts over SSH.

The Python API::

    from kvm_clone_tui import KVMCloneClient

    async with KVMCloneClient() as client:
        for listing in await client.list_vms(["alpha", "root@10.0.0.5"]):
            ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["CloneOptions", "KVMCloneClient", "__version__"]

if TYPE_CHECKING:
    from kvm_clone_tui.api.client import KVMCloneClient
    from kvm_clone_tui.api.options import CloneOptions


def __getattr__(name: str) -> Any:
    # Imported lazily: `kvm-clone --help` and the lab need not even load the API layer.
    if name == "KVMCloneClient":
        from kvm_clone_tui.api.client import KVMCloneClient

        return KVMCloneClient
    if name == "CloneOptions":  # the original kvm-clone's example imports it from here
        from kvm_clone_tui.api.options import CloneOptions

        return CloneOptions
    raise AttributeError(name)
