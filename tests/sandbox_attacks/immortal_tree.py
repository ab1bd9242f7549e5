"""Children that ignore SIGTERM and a setsid grandchild that daemonised; then wait forever."""
import os
import signal
import time

if os.fork() == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    while True:
        time.sleep(1)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(1)
    os._exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("tree planted", flush=True)
while True:
    time.sleep(1)
