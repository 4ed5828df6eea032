"""Benchmark: listing hosts (`kvm-clone list`, ``KVMCloneClient.list_vms``) and the live inventory.

Run as root from the repository (it starts a lab of its own; the shared lab is left alone)::

    .venv/bin/python -m bench.list_inventory [--vms 200] [--hosts 3] [--runs 5]

What it does:

1. ``kvm-clone lab --dir <temp dir> up --hosts N --base-address 127.0.0.60 --no-sample-vms``:
   a private lab on addresses the shared lab does not use; ``lab up`` writes the kvm-clone
   config for it (``<dir>/config.yaml``).
2. Defines ``--vms`` VMs on every host (a 1 GiB qcow2 disk, a NIC; libvirt-python inside the
   host's namespace, see ``bench/common/lab_driver.py``), then measures over ``--runs`` runs:
   the wall time of ``kvm-clone list <hosts> --output json`` (a whole process: Python start-up,
   SSH logins, reads, JSON), and in-process ``KVMCloneClient.list_vms``: cold (new client: SSH
   logins included) and warm (connections already open).
3. Tops the first host up to ``--tracker-vms`` VMs and follows it with
   ``KVMCloneClient.tracker`` + ``watch`` + ``subscribe`` while VMs are defined, started,
   stopped and undefined: event-to-updated-inventory latency, and counts of full reads
   (``read_inventory_parallel``) vs single-VM reads (``read_one_vm``) to show that events never
   cause a re-list; compared with the time of one full re-list.
4. Always tears its lab down (``lab down --purge``), on errors and Ctrl-C too.

Results are printed, and as Markdown with ``--markdown`` (for docs/benchmarks.md).
"""
