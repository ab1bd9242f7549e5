"""Read the node's key and another product's data by their host paths, and by tricks."""
import os

from trustspace.sandbox import api

p = api.params()
refused = []
for path in (p["node_key"], p["other_product"], "/data/../" + os.path.basename(p["other_product"]),
             "/proc/1/root" + p["node_key"], "/proc/self/root" + p["other_product"]):
    try:
        with open(path, "rb") as f:
            print("READ", path, f.read()[:40])
    except OSError as exc:
        refused.append(f"{path}: {exc.strerror}")
print("\n".join(refused))
print("visible datasets:", os.listdir("/data"))
if len(refused) == 5:
    raise SystemExit("every host file was out of reach")
