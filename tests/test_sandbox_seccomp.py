"""The seccomp filter's syscall tables, checked against libseccomp (an independent source of the
kernel's numbering), and the shape of the BPF program. Its effect inside the sandbox is tested
in tests/test_sandbox.py (test_attack_forbidden_syscalls)."""

from __future__ import annotations

import ctypes
import ctypes.util
import struct

import pytest

from trustspace.sandbox import _seccomp


@pytest.fixture(scope="module")
def resolve() -> ctypes._NamedFuncPointer:
    name = ctypes.util.find_library("seccomp")
    assert name is not None, "libseccomp (Debian package libseccomp2) is needed for this check"
    lib = ctypes.CDLL(name)
    fn = lib.seccomp_syscall_resolve_name_arch
    fn.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    fn.restype = ctypes.c_int
    return fn


@pytest.mark.interop
@pytest.mark.parametrize("arch", [_seccomp.X86_64, _seccomp.AARCH64], ids=lambda a: a.name)
def test_syscall_numbers_match_libseccomp(resolve: ctypes._NamedFuncPointer,
                                          arch: _seccomp.Arch) -> None:
    for name in (*_seccomp.DENIED, "clone", "clone3", "socket"):
        number = resolve(arch.audit, name.encode())
        if number < 0:  # a pseudo-syscall: the architecture has no such call
            assert name not in arch.numbers, name
        else:
            assert arch.numbers.get(name) == number, name


def decode(prog: bytes) -> list[tuple[int, int, int, int]]:
    return [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]


@pytest.mark.parametrize("arch", [_seccomp.X86_64, _seccomp.AARCH64], ids=lambda a: a.name)
def test_program_shape(arch: _seccomp.Arch) -> None:
    prog = decode(_seccomp.build(arch))
    assert len(prog) < 4096  # BPF_MAXINSNS
    assert prog[0] == (0x20, 0, 0, 4)  # load the architecture
    assert prog[1] == (0x15, 1, 0, arch.audit)
    assert prog[2] == (0x06, 0, 0, _seccomp.SECCOMP_RET_KILL_PROCESS)
    assert prog[-1] == (0x06, 0, 0, _seccomp.SECCOMP_RET_ALLOW)
    for i, (code, jt, jf, _) in enumerate(prog):  # every jump lands inside the program
        if code & 0x07 == 0x05:
            assert i + 1 + max(jt, jf) < len(prog)
    compared = {k for code, _, _, k in prog if code == 0x15}
    for name in _seccomp.DENIED:
        if name in arch.numbers:
            assert arch.numbers[name] in compared, name


def test_host_arch() -> None:
    import platform

    if platform.machine() in ("x86_64", "aarch64"):
        assert _seccomp.host_arch().name == platform.machine()
