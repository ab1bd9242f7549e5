"""The node: HTTP APIs (protocol, management, audit), configuration, wiring and the CLI.

`create_app(settings)` builds one node; `Settings.load(home)` reads a node's configuration.
Both are imported on first use, so the crypto commands of the CLI start without the web stack.
"""

from typing import Any

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "Settings":
        from .config import Settings

        return Settings
    raise AttributeError(name)
