"""The sandbox's seccomp filter, as the classic BPF program bubblewrap's ``--seccomp FD`` loads.

A deny list over what a data-analysis job never needs and what widens the kernel's attack
surface (the same families Docker's and Flatpak's default profiles refuse): kernel modules,
kexec, mounts and pivot_root, namespaces (``unshare``, ``setns``, ``clone`` with a ``CLONE_NEW*``
flag), ``ptrace`` and cross-process memory access, keyrings, BPF, perf events, userfaultfd,
io_uring, clock and host-name changes, swap, reboot, quotas, file handles (``open_by_handle_at``,
the "shocker" escape), ``personality``; and memory that the per-process RLIMIT_AS does not
count: SysV shared memory (``shmget``: a segment outlives its mappings) and ``memfd_create``.
``clone3`` answers ``ENOSYS``, so the C library falls back to ``clone``, whose flags the filter
can see (``clone3`` passes them in memory). Sockets other than ``AF_UNIX`` are refused, so the
network stack is out of reach even inside the sandbox's private network namespace. Calls from
another ABI (x32, or a foreign architecture) kill the process. Everything else is allowed: the
other layers (namespaces, no capabilities, rlimits, an unprivileged uid) do the containing.

Syscall numbers are the kernel's ABI for each architecture (arch/x86/entry/syscalls/syscall_64.tbl,
include/uapi/asm-generic/unistd.h); tests/test_sandbox_seccomp.py checks them against libseccomp.
Filter semantics: Linux Documentation/userspace-api/seccomp_filter.rst.
"""

from __future__ import annotations

import errno
import platform
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import SandboxUnavailable

# <linux/audit.h>
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
X32_SYSCALL_BIT = 0x40000000

# <linux/seccomp.h>
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

# <linux/filter.h>: BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_JMP|BPF_JGE|BPF_K,
# BPF_JMP|BPF_JSET|BPF_K, BPF_RET|BPF_K
_LD_ABS = 0x20
_JEQ = 0x15
_JGE = 0x35
_JSET = 0x45
_RET = 0x06

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
_OFF_NR = 0
_OFF_ARCH = 4
_OFF_ARG0_LOW = 16  # args[0], low 32 bits on a little-endian machine

# <linux/sched.h>: every CLONE_NEW* flag (cgroup, uts, ipc, user, pid, net, mount, time)
CLONE_NEW_FLAGS = (0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
                   | 0x40000000 | 0x00020000 | 0x00000080)
AF_UNIX = 1

DENIED = (
    "acct", "add_key", "adjtimex", "bpf", "chroot", "clock_adjtime", "clock_settime",
    "delete_module", "fanotify_init", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick",
    "init_module", "io_uring_enter", "io_uring_register", "io_uring_setup", "ioperm", "iopl",
    "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mbind", "memfd_create",
    "migrate_pages", "mount", "mount_setattr", "move_mount", "move_pages", "name_to_handle_at",
    "nfsservctl", "open_by_handle_at", "open_tree", "perf_event_open", "personality",
    "pidfd_getfd", "pivot_root", "process_vm_readv", "process_vm_writev", "ptrace", "quotactl",
    "quotactl_fd", "reboot", "request_key", "setdomainname", "sethostname", "setns",
    "settimeofday", "shmget", "swapoff", "swapon", "_sysctl", "syslog", "umount2", "unshare",
    "uselib",
    "userfaultfd", "vhangup",
)


@dataclass(frozen=True)
class Arch:
    name: str
    audit: int
    x32_bit: bool  # refuse syscall numbers with X32_SYSCALL_BIT (x86_64 only)
    numbers: Mapping[str, int]


X86_64 = Arch("x86_64", AUDIT_ARCH_X86_64, True, {
    "_sysctl": 156, "acct": 163, "add_key": 248, "adjtimex": 159, "bpf": 321, "chroot": 161,
    "clock_adjtime": 305, "clock_settime": 227, "clone": 56, "clone3": 435,
    "delete_module": 176, "fanotify_init": 300, "finit_module": 313, "fsconfig": 431,
    "fsmount": 432, "fsopen": 430, "fspick": 433, "init_module": 175, "io_uring_enter": 426,
    "io_uring_register": 427, "io_uring_setup": 425, "ioperm": 173, "iopl": 172, "kcmp": 312,
    "kexec_file_load": 320, "kexec_load": 246, "keyctl": 250, "lookup_dcookie": 212,
    "mbind": 237, "memfd_create": 319, "migrate_pages": 256, "mount": 165,
    "mount_setattr": 442, "move_mount": 429,
    "move_pages": 279, "name_to_handle_at": 303, "nfsservctl": 180, "open_by_handle_at": 304,
    "open_tree": 428, "perf_event_open": 298, "personality": 135, "pidfd_getfd": 438,
    "pivot_root": 155, "process_vm_readv": 310, "process_vm_writev": 311, "ptrace": 101,
    "quotactl": 179, "quotactl_fd": 443, "reboot": 169, "request_key": 249,
    "setdomainname": 171, "sethostname": 170, "setns": 308, "settimeofday": 164, "shmget": 29,
    "socket": 41, "swapoff": 168, "swapon": 167, "syslog": 103, "umount2": 166,
    "unshare": 272, "uselib": 134, "userfaultfd": 323, "vhangup": 153,
})

# asm-generic numbering; aarch64 has no ioperm, iopl, _sysctl or uselib.
AARCH64 = Arch("aarch64", AUDIT_ARCH_AARCH64, False, {
    "acct": 89, "add_key": 217, "adjtimex": 171, "bpf": 280, "chroot": 51,
    "clock_adjtime": 266, "clock_settime": 112, "clone": 220, "clone3": 435,
    "delete_module": 106, "fanotify_init": 262, "finit_module": 273, "fsconfig": 431,
    "fsmount": 432, "fsopen": 430, "fspick": 433, "init_module": 105, "io_uring_enter": 426,
    "io_uring_register": 427, "io_uring_setup": 425, "kcmp": 272, "kexec_file_load": 294,
    "kexec_load": 104, "keyctl": 219, "lookup_dcookie": 18, "mbind": 235, "memfd_create": 279,
    "migrate_pages": 238,
    "mount": 40, "mount_setattr": 442, "move_mount": 429, "move_pages": 239,
    "name_to_handle_at": 264, "nfsservctl": 42, "open_by_handle_at": 265, "open_tree": 428,
    "perf_event_open": 241, "personality": 92, "pidfd_getfd": 438, "pivot_root": 41,
    "process_vm_readv": 270, "process_vm_writev": 271, "ptrace": 117, "quotactl": 60,
    "quotactl_fd": 443, "reboot": 142, "request_key": 218, "setdomainname": 162,
    "sethostname": 161, "setns": 268, "settimeofday": 170, "shmget": 194, "socket": 198,
    "swapoff": 225,
    "swapon": 224, "syslog": 116, "umount2": 39, "unshare": 97, "userfaultfd": 282,
    "vhangup": 58,
})

ARCHES = {"x86_64": X86_64, "amd64": X86_64, "aarch64": AARCH64, "arm64": AARCH64}


def host_arch() -> Arch:
    try:
        return ARCHES[platform.machine().lower()]
    except KeyError:
        raise SandboxUnavailable(
            f"no seccomp filter for the {platform.machine()} architecture (x86_64 and aarch64 "
            "only); pass seccomp=False to run without one") from None


def _ins(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _errno(number: int) -> int:
    return SECCOMP_RET_ERRNO | (number & 0xFFFF)


def build(arch: Arch) -> bytes:
    """The filter for `arch`, as an array of ``struct sock_filter``."""
    prog = [
        _ins(_LD_ABS, 0, 0, _OFF_ARCH),
        _ins(_JEQ, 1, 0, arch.audit),
        _ins(_RET, 0, 0, SECCOMP_RET_KILL_PROCESS),
        _ins(_LD_ABS, 0, 0, _OFF_NR),
    ]
    if arch.x32_bit:
        prog += [_ins(_JGE, 0, 1, X32_SYSCALL_BIT), _ins(_RET, 0, 0, SECCOMP_RET_KILL_PROCESS)]
    for name in DENIED:
        nr = arch.numbers.get(name)
        if nr is not None:
            prog += [_ins(_JEQ, 0, 1, nr), _ins(_RET, 0, 0, _errno(errno.EPERM))]
    prog += [
        _ins(_JEQ, 0, 1, arch.numbers["clone3"]), _ins(_RET, 0, 0, _errno(errno.ENOSYS)),
        # clone(flags, ...): refuse any new namespace
        _ins(_JEQ, 0, 4, arch.numbers["clone"]),
        _ins(_LD_ABS, 0, 0, _OFF_ARG0_LOW),
        _ins(_JSET, 0, 1, CLONE_NEW_FLAGS),
        _ins(_RET, 0, 0, _errno(errno.EPERM)),
        _ins(_RET, 0, 0, SECCOMP_RET_ALLOW),
        # socket(domain, ...): AF_UNIX only
        _ins(_JEQ, 0, 4, arch.numbers["socket"]),
        _ins(_LD_ABS, 0, 0, _OFF_ARG0_LOW),
        _ins(_JEQ, 1, 0, AF_UNIX),
        _ins(_RET, 0, 0, _errno(errno.EACCES)),
        _ins(_RET, 0, 0, SECCOMP_RET_ALLOW),
        _ins(_RET, 0, 0, SECCOMP_RET_ALLOW),
    ]
    return b"".join(prog)
