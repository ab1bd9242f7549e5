"""Write outside /work: the code, the data, the system, /etc, /, /proc/sys, /dev/shm's host."""

from trustspace.sandbox import api

targets = ["/job/code/planted.py", "/job/params.json", api.path("mine").as_posix(),
           "/data/planted.csv", "/usr/planted", "/etc/passwd", "/planted", "/job/lib/x.py",
           "/proc/sys/kernel/hostname", "/root/planted", "/dev/planted"]
written = []
for target in targets:
    try:
        with open(target, "a") as f:
            f.write("planted\n")
        written.append(target)
    except OSError as exc:
        print(f"{target}: {exc.strerror}")
if written:
    print("WRITTEN", written)
else:
    raise SystemExit(f"every write outside /work was refused ({len(targets)} paths)")
