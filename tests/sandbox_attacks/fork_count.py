"""Fork until the kernel refuses; report how many processes the job could hold at once."""
import os
import time

children = []
error = None
for _ in range(10_000):
    try:
        pid = os.fork()
    except OSError as exc:
        error = exc
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    children.append(pid)
print(len(children), error)
