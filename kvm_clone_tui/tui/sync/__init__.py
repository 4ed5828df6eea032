"""Syncing a VM to its clone: the app's sync flow (``s``, ``r``/``R``, ``x``, ``u``), the sync
dialog, the remembered pairs and each run's numbers, and a session's view in the jobs
panel."""
