"""The node: command line, and later the HTTP APIs, config and wiring."""
