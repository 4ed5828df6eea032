"""Side-by-side clone benchmark: kvm-clone (relay, direct) against the usual tools, on the lab.

Run as root from the repository, on the shared lab (``kvm-clone lab up``) or on a lab of its
own (``--private-lab``: immune to other people's tests, which kill the shared beta's SSH
sessions and delete files from its pool)::

    .venv/bin/python -m bench.clone_peers [--runs 2] [--keep] [--private-lab] [--experiment]
        [--cap 180] [--markdown FILE]

Results and their analysis: docs/benchmarks.md, section "Clone".

Workload (made on ``alpha`` under bench-specific names, reused when it is already there):
VM ``bench-big`` with ``vda`` = ``bench-big-vda.img``, a 20 GiB raw sparse file holding 2 GiB of
data (8 extents of 256 MiB spread over the disk, alternately random bytes and log text), and
``vdb`` = ``bench-big-vdb.qcow2``, a 4 GiB qcow2 holding 256 MiB. The data is written from this
machine into the host's images folder (``LabLayout.host_path``); the VM is defined with
``virsh define`` over SSH.

Every run copies both files alpha -> beta; between runs the destination files are deleted and
the page cache is dropped (``sync; echo 3 > /proc/sys/vm/drop_caches``), the same for every
tool. Tools (round-robin, so that drift in the machine's load hits all of them alike):

1. ``kvm-clone clone alpha beta bench-big --new-name bench-copy --transfer relay``
2. the same with ``--transfer direct`` (an ``ssh-agent`` started here holds the lab key)
3. ``ssh alpha cat FILE | ssh beta 'cat > FILE'`` (one pipeline per file)
4. ``scp -3 alpha:F1 alpha:F2 beta:DIR``
5. ``ssh -A alpha rsync -avz F1 F2 beta:DIR`` (agent forwarding, the original tool's method)
6. ``ssh -A alpha rsync -avS --inplace F1 F2 beta:DIR``
7. ``ssh alpha tar -C DIR -cSf - F1 F2 | ssh beta tar -C DIR -xSf -``
8. ``virsh vol-download --sparse`` to a temp file here, then ``vol-create-as`` +
   ``vol-upload --sparse`` on beta (``qemu+ssh://`` with the lab's ssh_config)

Measured per run: wall seconds (the whole command, process start-up and logins included),
MiB/s of the source's allocated data, the destination's allocation (``st_blocks * 512``), the
client's peak RSS (``VmHWM`` of every process this script started for the run, sampled every
0.1 s and summed over the processes alive together; ``ru_maxrss`` from ``wait4`` cannot be used:
Linux carries the forking parent's peak over ``exec``), CPU seconds per process
kind on the whole machine (client, sshd, agent send/receive, ...) and a content check: the
sha256 of each file with its all-zero 1 MiB blocks elided (offset-tagged), identical for two
files exactly when their contents are (``--full-sha256`` hashes every byte instead: slow).

Tools that copy every zero of the 20 GiB disk would take most of an hour per round: a run still
going after ``--cap`` seconds is stopped, reported as "> cap" and that tool is not run again
(kvm-clone is never capped, only stopped after 300 s). A run that fails otherwise is run again
up to twice (the shared lab's interference), and the retries are printed.

``--profile`` adds one kvm-clone relay and one direct run under ``py-spy record`` (``pip install
py-spy``) and prints where the client spends its time. Everything the benchmark made on alpha
and beta is removed at the end (unless ``--keep``: the workload stays for the next run), and the
ssh-agent it started is stopped.
"""
