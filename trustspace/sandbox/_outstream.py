"""The host's side of the output pipe: checks and unpacks what `_boot._send` streamed from the
sandbox's /work/out (which lives on a size-capped tmpfs that disappears with the sandbox).

The stream is the job's word, so it is parsed like any untrusted input: a size cap (applied by
the runner while reading), at most `max_files` files, names that stay inside the output folder
(no absolute path, no empty, ``.`` or ``..`` component, no control character), each file
created fresh (``O_EXCL``, no symlink followed), and nothing after the end marker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"TSOUT/1\n"  # _boot.MAGIC
_MAX_NAME = 1024


class StreamInvalid(Exception):
    pass


@dataclass(frozen=True)
class Stream:
    started: bool  # the job's code got control (the boot script wrote the magic)
    complete: bool  # the end marker arrived: every output file was sent
    files: int
    cpu_seconds: float | None  # as the job's process reported them (informative only)
    peak_memory: int | None


def _name(raw: bytes) -> tuple[str, ...]:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StreamInvalid("an output file name is not UTF-8") from None
    if not name or len(name) > _MAX_NAME or name.startswith("/") or any(
            ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise StreamInvalid(f"bad output file name {name[:80]!r}")
    parts = tuple(name.split("/"))
    if any(p in ("", ".", "..") for p in parts):
        raise StreamInvalid(f"bad output file name {name[:80]!r}")
    return parts


def _write(dest: Path, parts: tuple[str, ...], data: memoryview) -> None:
    folder = dest.joinpath(*parts[:-1])
    for i in range(1, len(parts)):
        sub = dest.joinpath(*parts[:i])
        if sub.is_symlink() or (sub.exists() and not sub.is_dir()):
            raise StreamInvalid(f"{'/'.join(parts[:i])} is both a file and a folder")
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        fd = os.open(folder / parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     0o644)
    except FileExistsError:
        raise StreamInvalid(f"{'/'.join(parts)} sent twice") from None
    except IsADirectoryError:
        raise StreamInvalid(f"{'/'.join(parts)} is both a file and a folder") from None
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def unpack_stream(data: bytes, dest: Path, *, max_files: int) -> Stream:
    """Write the streamed files under `dest` (an empty folder); raise `StreamInvalid`."""
    if not data:
        return Stream(False, False, 0, None, None)
    if not data.startswith(MAGIC):
        raise StreamInvalid("the output stream does not start with the magic")
    view = memoryview(data)
    pos = len(MAGIC)
    files = 0
    cpu: float | None = None
    peak: int | None = None

    def take(n: int) -> memoryview:
        nonlocal pos
        if pos + n > len(view):
            raise EOFError
        chunk = view[pos:pos + n]
        pos += n
        return chunk

    try:
        while pos < len(view):
            tag = bytes(take(1))
            if tag == b"F":
                parts = _name(bytes(take(int.from_bytes(take(2), "big"))))
                body = take(int.from_bytes(take(8), "big"))
                files += 1
                if files > max_files:
                    raise StreamInvalid(f"more than {max_files} output files")
                _write(dest, parts, body)
            elif tag == b"U":
                text = bytes(take(int.from_bytes(take(2), "big"))).decode("ascii", "replace")
                try:
                    cpu_text, peak_text = text.split()
                    cpu, peak = float(cpu_text), int(peak_text)
                except ValueError:
                    cpu = peak = None
            elif tag == b"E":
                if pos != len(view):
                    raise StreamInvalid("data after the end of the output stream")
                return Stream(True, True, files, cpu, peak)
            else:
                raise StreamInvalid(f"unknown record {tag!r} in the output stream")
    except EOFError:
        pass
    return Stream(True, False, files, cpu, peak)
