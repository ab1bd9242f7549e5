"""The first code that runs inside the sandbox (as /job/lib/_trustspace_boot.py), before the job's.

bubblewrap starts it as root of the sandbox's user namespace with two capabilities kept,
CAP_SETUID and CAP_SETGID, and nothing else (that root is the node's own uid on the host, mapped
so bubblewrap can build the sandbox's file system; it holds no capability outside). This script:

1. closes every inherited file descriptor but 0, 1, 2 and the output pipe;
2. lowers the resource limits (soft = hard, so the job cannot raise them again) and sets its
   OOM score to the maximum;
3. drops to uid/gid 65534 for good (setgroups, setresgid, setresuid), which clears its
   permitted and effective capabilities; 65534 maps to an unprivileged host uid that nothing
   else uses, so RLIMIT_NPROC counts the job's processes only;
4. runs the job's entry script as ``__main__``;
5. streams /work/out to the output pipe for the node to unpack (the node checks everything it
   receives: this script shares the job's process and is no more trusted than the job).

Standard library only, and as few imports as possible: every millisecond here is per job.
Exit codes: the job's own (clamped to 0..125, so above 128 always means a signal), 1 for an
uncaught exception, `EXIT_MEMORY` for a MemoryError, `EXIT_BOOT` when this script failed.
"""

import os
import sys

EXIT_MEMORY = 121
EXIT_BOOT = 122
SANDBOX_ID = 65534
OUT = "/work/out"
MAGIC = b"TSOUT/1\n"
_CHUNK = 1 << 16


def _limits(spec: str) -> None:
    import resource

    cpu, memory, processes, files, file_size = (int(v) for v in spec.split(","))
    for which, value in (
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),  # SIGXCPU at the soft limit, SIGKILL a second on
        (resource.RLIMIT_AS, (memory, memory)),  # virtual memory: swap cannot extend it
        (resource.RLIMIT_NPROC, (processes, processes)),
        (resource.RLIMIT_NOFILE, (files, files)),
        (resource.RLIMIT_FSIZE, (file_size, file_size)),
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_MEMLOCK, (0, 0)),
        (resource.RLIMIT_MSGQUEUE, (0, 0)),
    ):
        resource.setrlimit(which, value)


def _oom_first() -> None:
    """If the machine runs out of memory, the kernel kills the job's processes before anything
    of the node's (raising one's own score needs no privilege; children inherit it)."""
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")


def _drop_privileges() -> None:
    os.setgroups([])
    os.setresgid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID)
    os.setresuid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID)


def _run(entry: str) -> int:
    import builtins

    main = type(sys)("__main__")
    main.__file__ = entry
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    try:
        with open(entry, "rb") as f:
            code = compile(f.read(), entry, "exec")
        exec(code, main.__dict__)  # noqa: S102 - running the job is the point
    except SystemExit as exc:
        status = exc.code
        if status is None:
            return 0
        if isinstance(status, int) and not isinstance(status, bool):
            return min(max(status, 0), 125)
        print(status, file=sys.stderr)
        return 1
    except MemoryError:
        sys.stderr.write("MemoryError: the job reached its memory limit\n")
        return EXIT_MEMORY
    except BaseException:
        import traceback

        traceback.print_exc()
        return 1
    return 0


def _finish() -> None:
    """What the interpreter does at exit: other threads, then atexit handlers."""
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()
    import atexit

    atexit._run_exitfuncs()


def _send(fd: int) -> None:
    """Stream the regular files under /work/out: for each, ``F``, the name's length (2 bytes),
    the name, the size (8 bytes), the bytes; then ``U`` with the job's CPU seconds and peak
    memory as text, and ``E``. Symlinks and special files are not sent."""
    import resource

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    for top, dirs, files in os.walk(OUT):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(top, name)
            try:
                src = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                info = os.fstat(src)
                if info.st_mode & 0o170000 != 0o100000:  # not S_ISREG (no `stat` import)
                    continue
                rel = os.path.relpath(path, OUT).encode("utf-8", "surrogateescape")
                write(b"F" + len(rel).to_bytes(2, "big") + rel + info.st_size.to_bytes(8, "big"))
                left = info.st_size
                while left > 0:
                    chunk = os.read(src, min(_CHUNK, left))
                    if not chunk:  # shrank meanwhile: pad, the node sees the size it was told
                        chunk = bytes(min(_CHUNK, left))
                    write(chunk)
                    left -= len(chunk)
            finally:
                os.close(src)
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    usage = f"{cpu:.6f} {max(me.ru_maxrss, kids.ru_maxrss) * 1024}".encode()
    write(b"U" + len(usage).to_bytes(2, "big") + usage + b"E")


def main() -> None:
    try:
        out_fd, entry, limits, path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
        os.closerange(3, out_fd)
        os.closerange(out_fd + 1, 1 << 16)
        os.set_inheritable(out_fd, False)
        _limits(limits)
        _oom_first()
        if os.getuid() != SANDBOX_ID:  # bubblewrap run by root: see the docstring
            _drop_privileges()
        os.write(out_fd, MAGIC)  # the node now knows the job itself started
        sys.path[:0] = [os.path.dirname(entry), *path.split(":")]
        sys.argv = [entry]
    except Exception as exc:  # noqa: BLE001 - any failure here is the sandbox's, not the job's
        sys.stderr.write(f"trustspace sandbox: start-up failed: {exc!r}\n")
        os._exit(EXIT_BOOT)
    status = _run(entry)
    try:
        _finish()
    except BaseException:  # noqa: BLE001 - the job's atexit handlers, not ours
        status = status or 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        status = status or 1
    try:
        _send(out_fd)
    except BaseException as exc:  # noqa: BLE001
        sys.stderr.write(f"trustspace sandbox: could not send the outputs: {exc!r}\n")
        status = status or 1
    os._exit(status)


if __name__ == "__main__":
    main()
