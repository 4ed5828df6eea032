"""The kvm-clone host agent: the program kvm-clone runs on each host, standard library only.

Shipped as one content-addressed zipapp (``kvm_clone_tui.agent.zipapp``) in which this package
is ``kvm_clone_agent``; everything here imports only the standard library and its own modules
(relative imports), and runs on Python 3.8+. Modules, from the wire up:

- ``wire``: frame constants and structs (the client's ``protocol`` imports them), errors, JSON
  lines, writes to stdout, progress;
- ``paths``: path checks and opening files and directories without following symlinks;
- ``extents``: data extents, block cutting, reads, hole punching;
- ``hashing``: stream and block digests, parallel block hashing;
- ``index``: the block index kept beside a file; ``hash`` and ``index-refresh``;
- ``send``, ``nbd``, ``sinks``, ``receive``, ``undo``: the stream's two ends and the undo log;
- ``fsops``: ``put``, ``stat``, ``resolve``, ``rename``, ``remove``;
- ``tpm``: the emulated TPM's state directories (``tpm-pack`` ... ``tpm-remove``);
- ``probe``; ``version``; ``cli``: the command line (``main``).

Commands, frames and errors: docs/agent.md.
"""
