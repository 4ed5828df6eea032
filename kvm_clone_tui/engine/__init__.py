"""The engine: plans, clones, syncs and reverts, carried out on hosts over asyncssh and libvirt.

It imports its values and errors from :mod:`kvm_clone_tui.api` and never a UI (``lint-imports``);
its operations take a ``Hosts`` registry and reach each host through the ``Host`` port
(``host_port.py``), never the API's ``KVMCloneClient`` facade, which builds the registry
(``registry.py``) and imports the engine when it first reaches a host.
"""
