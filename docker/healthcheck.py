#!/usr/bin/env python3
"""Container health check: GET /.well-known/dspace-version on this node (unauthenticated, DSP
2025-1 "Exposure of Versions") and expect protocol version 2025-1. Exit 0 when healthy, 1 if not.

The port is TRUSTSPACE_PORT, else the home's trustspace.toml, else 8100. Standard library only."""

from __future__ import annotations

import json
import os
import sys
import tomllib
import urllib.request
from pathlib import Path


def port() -> int:
    if os.environ.get("TRUSTSPACE_PORT"):
        return int(os.environ["TRUSTSPACE_PORT"])
    config = Path(os.environ.get("TRUSTSPACE_HOME", ".")) / "trustspace.toml"
    if config.is_file():
        with config.open("rb") as f:
            return int(tomllib.load(f).get("port", 8100))
    return 8100


def main() -> int:
    url = f"http://127.0.0.1:{port()}/.well-known/dspace-version"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 - fixed http URL
            body = json.load(response)
        versions = [v.get("version") for v in body["protocolVersions"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if "2025-1" not in versions:
        print(f"unhealthy: {url} offers {versions}, not 2025-1", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
