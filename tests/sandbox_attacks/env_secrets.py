"""Look for the node's environment: our own, and every process's /proc/<pid>/environ."""
import os

found = [f"{k}={v}" for k, v in os.environ.items()]
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                entries = f.read().split(b"\0")
            found += [f"{pid}: {e.decode(errors='replace')}" for e in entries if e]
        except OSError as exc:
            print(f"/proc/{pid}/environ: {exc.strerror}")
print("\n".join(found))
