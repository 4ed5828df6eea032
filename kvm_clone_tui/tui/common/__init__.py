"""What the clone and sync features share: the job status, progress and log lines, the
job-widget base and the app's job manager, the planning-dialog base, and the modal screens
both use (pick a destination, confirm, help)."""
