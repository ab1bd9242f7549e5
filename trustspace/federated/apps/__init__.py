"""Flower apps shipped with trustspace (each directory is one app: `flwr run <dir>`)."""
