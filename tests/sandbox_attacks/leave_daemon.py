"""Leave a daemonised grandchild behind and exit 0 at once."""
import os
import time

if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        while True:
            time.sleep(1)
    os._exit(0)
print("daemon left", flush=True)
