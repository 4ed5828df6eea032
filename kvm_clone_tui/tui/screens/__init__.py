"""Modal screens: VM details, add host, confirmation, help."""
