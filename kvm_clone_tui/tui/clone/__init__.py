"""Cloning: the app's clone flow (``c`` or a drop -> destination -> dialog -> jobs), the clone
dialog and its form, a clone job's state and its view in the jobs panel, and the rollback
prompt of a failed clone."""
