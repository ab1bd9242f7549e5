"""Try the system calls the seccomp filter refuses, and a few it must allow."""
import ctypes
import errno
import json
import os
import socket
import subprocess

from trustspace.sandbox import api

libc = ctypes.CDLL(None, use_errno=True)


def call(name, *args):
    ctypes.set_errno(0)
    rc = getattr(libc, name)(*args)
    return "ok" if rc != -1 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


def sys_call(number, *args):
    libc.syscall.restype = ctypes.c_long
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    return "ok" if rc != -1 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET = 0x10000000, 0x00020000, 0x40000000
nr = api.params()["nr"]  # this machine's syscall numbers, from the seccomp module's table
results = {
    "unshare(user)": call("unshare", CLONE_NEWUSER),
    "unshare(net)": call("unshare", CLONE_NEWNET),
    "mount": call("mount", b"none", b"/work/tmp", b"tmpfs", 0, None),
    "ptrace(attach 1)": call("ptrace", 16, 1, None, None),
    "keyctl": sys_call(nr["keyctl"], 0, 0),
    "personality": call("personality", 0xFFFFFFFF),
    "chroot": call("chroot", b"/work"),
    "setns": call("setns", 0, 0),
    "pivot_root": sys_call(nr["pivot_root"], 0, 0),
    "clone(user)": sys_call(nr["clone"], CLONE_NEWUSER | 17, 0, 0, 0, 0),
    "io_uring_setup": sys_call(nr["io_uring_setup"], 1, 0),
    "bpf": sys_call(nr["bpf"], 0, 0, 0),
    "clone3": sys_call(nr["clone3"], 0, 0),
    "memfd_create": sys_call(nr["memfd_create"], 0, 0),
    "shmget": sys_call(nr["shmget"], 0, 4096, 0o1600),
}
with open("/proc/self/oom_score_adj") as f:
    results["oom_score_adj"] = f.read().strip()
for family in ("AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"):
    try:
        socket.socket(getattr(socket, family), socket.SOCK_DGRAM if family != "AF_PACKET"
                      else socket.SOCK_RAW).close()
        results[f"socket({family})"] = "ok"
    except OSError as exc:
        results[f"socket({family})"] = errno.errorcode.get(exc.errno, str(exc.errno))
# what must keep working
a, b = socket.socketpair()
a.sendall(b"ping")
results["socketpair(AF_UNIX)"] = "ok" if b.recv(4) == b"ping" else "broken"
results["subprocess"] = "ok" if subprocess.run(["/bin/true"]).returncode == 0 else "broken"
pid = os.fork()
if pid == 0:
    os._exit(7)
results["fork"] = "ok" if os.waitpid(pid, 0)[1] >> 8 == 7 else "broken"
print(json.dumps(results))
