"""registry: filled in by its issue."""
