"""Connect to TCP ports on the host's loopback: PostgreSQL's 5432, and one the test listens on."""
import json
import socket

from trustspace.sandbox import api

results = {}
for port in (5432, api.params()["port"]):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        results[port] = "connected"
    except OSError as exc:
        results[port] = f"{type(exc).__name__}: {exc}"
print(json.dumps(results))
if "connected" not in results.values():
    raise SystemExit(f"no network: {results[5432]}")
