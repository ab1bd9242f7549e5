"""Code bundles: the consumer's job code as a zip archive, packed deterministically and unpacked
on the provider's node with every member checked.

A bundle is a zip archive (stored or deflated members only) of regular files. Its entry point,
the script the sandbox runs, is, in this order:

1. ``entry = "path/to/script.py"`` in a ``trustspace-job.toml`` manifest at the top level (the
   only key the manifest may hold);
2. ``main.py`` at the top level;
3. the only file of a one-file bundle, if it is a ``.py`` file (`pack` of a single script).

`pack` skips ``__pycache__`` folders, ``*.pyc`` files and hidden entries (names starting with
``.``, such as ``.git`` or ``.env``), refuses symlinks and anything that is not a regular file,
and writes members in sorted order with a fixed timestamp and mode, so the same tree always
gives the same bytes (and the same `digest`).

`unpack` refuses, with `BundleInvalid(reason)`: an archive larger than ``max_bytes``; absolute
names, ``..`` or empty components, backslashes or control characters in names; symlinks and
other special files (the mode in the zip's Unix external attributes); duplicate names or a name
that is both a file and a folder; encrypted members or compression other than stored/deflate;
more than ``max_files`` members; members whose declared sizes add up to more than ``max_bytes``,
or that inflate to more than they declare (the sizes are counted while extracting, so a zip bomb
stops at the limit); a CRC mismatch; a missing entry point.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import tomllib
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from trustspace.crypto import sm3

from .errors import BundleInvalid

__all__ = [
    "DEFAULT_MAX_BYTES",
    "BundleInvalid",
    "DEFAULT_MAX_FILES",
    "MANIFEST",
    "digest",
    "listing",
    "pack",
    "unpack",
]

MANIFEST = "trustspace-job.toml"
DEFAULT_MAX_FILES = 200
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
_MAX_NAME = 1024
_MAX_COMPONENT = 255
_CHUNK = 64 * 1024
_LISTING_TEXT = 64 * 1024  # `listing` shows a member's text up to this size
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp: nothing of the packing host leaks


def digest(data: bytes) -> str:
    """A bundle's digest as jobs carry it: ``"sm3:" + hex(SM3(archive bytes))``."""
    return "sm3:" + sm3(data).hex()


# ---- packing -----------------------------------------------------------------------------------

def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        keep = []
        for name in sorted(dirnames):
            if name.startswith(".") or name == "__pycache__":
                continue
            if (base / name).is_symlink():
                raise BundleInvalid("symlinks cannot be packed",
                                    member=(base / name).relative_to(root).as_posix())
            keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith(".pyc"):
                continue
            path = base / name
            rel = path.relative_to(root).as_posix()
            mode = path.lstat().st_mode
            if not stat.S_ISREG(mode):
                raise BundleInvalid("only regular files can be packed (no symlinks, devices "
                                    "or sockets)", member=rel)
            yield rel, path


def pack(path: Path, *, max_files: int = DEFAULT_MAX_FILES,
         max_bytes: int = DEFAULT_MAX_BYTES, entry: bool = True) -> bytes:
    """A deterministic zip archive of a ``.py`` file or of a folder with an entry point (any
    folder with ``entry=False``: a Flower app has its own)."""
    path = Path(path)
    if path.is_symlink():
        raise BundleInvalid("symlinks cannot be packed", member=path.name)
    if path.is_file():
        if path.suffix != ".py":
            raise BundleInvalid("a single-file bundle must be a .py script", member=path.name)
        members = [(path.name, path)]
    elif path.is_dir():
        members = sorted(_walk(path))
    else:
        raise BundleInvalid(f"{path} is neither a file nor a folder")
    if not members:
        raise BundleInvalid("nothing to pack")
    if len(members) > max_files:
        raise BundleInvalid(f"{len(members)} files (at most {max_files})")
    total = 0
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, source in members:
            _check_name(name)
            data = source.read_bytes()
            total += len(data)
            if total > max_bytes:
                raise BundleInvalid(f"more than {max_bytes} bytes of code")
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.create_system = 3  # Unix, so the mode below means what it says
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data, compresslevel=9)
    data = buffer.getvalue()
    if len(data) > max_bytes:
        raise BundleInvalid(f"the archive is {len(data)} bytes (at most {max_bytes})")
    if entry:
        _entry({name for name, _ in members},
               lambda name: (path / name).read_bytes() if path.is_dir() else path.read_bytes())
    return data


# ---- checking ----------------------------------------------------------------------------------

def _check_name(name: str) -> PurePosixPath:
    if not name or len(name) > _MAX_NAME:
        raise BundleInvalid(f"member names must be 1..{_MAX_NAME} characters", member=name[:80])
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name) or "\\" in name:
        raise BundleInvalid("control characters and backslashes are not allowed in names",
                            member=repr(name[:80]))
    if name.startswith("/"):
        raise BundleInvalid("absolute path", member=name)
    parts = name.split("/")
    if parts[-1] == "":  # a folder entry "a/b/"
        parts = parts[:-1]
    for part in parts:
        if part in ("", ".", ".."):
            raise BundleInvalid("empty, '.' or '..' path component", member=name)
        if len(part) > _MAX_COMPONENT:
            raise BundleInvalid(f"a path component is longer than {_MAX_COMPONENT}", member=name)
    return PurePosixPath(*parts)


def _kind(info: zipfile.ZipInfo) -> str:
    """"file" or "dir"; anything else (symlink, device, fifo, socket) is refused."""
    if info.create_system == 3:  # Unix: the high 16 bits of the external attributes are st_mode
        fmt = stat.S_IFMT(info.external_attr >> 16)
        if fmt == stat.S_IFLNK:
            raise BundleInvalid("symlinks are not allowed", member=info.filename)
        if fmt not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise BundleInvalid("only regular files and folders are allowed",
                                member=info.filename)
        if fmt == stat.S_IFDIR and not info.filename.endswith("/"):
            raise BundleInvalid("a folder entry must end with '/'", member=info.filename)
    return "dir" if info.filename.endswith("/") else "file"


def _members(archive: zipfile.ZipFile, max_files: int,
             max_bytes: int) -> list[tuple[zipfile.ZipInfo, PurePosixPath, str]]:
    infos = archive.infolist()
    if len(infos) > max_files:
        raise BundleInvalid(f"{len(infos)} members (at most {max_files})")
    seen: dict[PurePosixPath, str] = {}
    declared = 0
    members = []
    for info in infos:
        path = _check_name(info.filename)
        kind = _kind(info)
        if info.flag_bits & 0x1:
            raise BundleInvalid("encrypted members are not allowed", member=info.filename)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise BundleInvalid("only stored or deflated members are allowed",
                                member=info.filename)
        if path in seen:
            raise BundleInvalid("duplicate name", member=info.filename)
        seen[path] = kind
        declared += info.file_size
        if declared > max_bytes:
            raise BundleInvalid(f"members declare more than {max_bytes} bytes")
        members.append((info, path, kind))
    for path in seen:  # "a" as a file and "a/b" inside it
        for parent in path.parents:
            if seen.get(parent) == "file":
                raise BundleInvalid(f"{parent} is both a file and a folder", member=str(path))
    return members


def _open(data: bytes, max_bytes: int) -> zipfile.ZipFile:
    if len(data) > max_bytes:
        raise BundleInvalid(f"the archive is {len(data)} bytes (at most {max_bytes})")
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise BundleInvalid(f"not a valid zip archive: {exc}") from None


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int,
          sink: Callable[[bytes], None]) -> int:
    """Inflate one member into `sink`; return its actual size. Stops as soon as it exceeds what
    it declares or the remaining budget (a zip bomb never inflates past the limit)."""
    size = 0
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > info.file_size:
                    raise BundleInvalid("inflates to more than its declared size",
                                        member=info.filename)
                if size > budget:
                    raise BundleInvalid("the members inflate to more than the limit",
                                        member=info.filename)
                sink(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
        raise BundleInvalid(f"corrupt member: {exc}", member=info.filename) from None
    if size != info.file_size:
        raise BundleInvalid("inflates to less than its declared size", member=info.filename)
    return size


def _entry(names: set[str], read: Callable[[str], bytes]) -> str:
    if MANIFEST in names:
        try:
            manifest = tomllib.loads(read(MANIFEST).decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise BundleInvalid(f"unreadable manifest: {exc}", member=MANIFEST) from None
        if set(manifest) != {"entry"} or not isinstance(manifest["entry"], str):
            raise BundleInvalid('the manifest must hold exactly entry = "<script>.py"',
                                member=MANIFEST)
        entry = manifest["entry"]
        _check_name(entry)
        if not entry.endswith(".py") or entry not in names:
            raise BundleInvalid(f"the entry point {entry!r} is not a .py file of the bundle",
                                member=MANIFEST)
        return entry
    if "main.py" in names:
        return "main.py"
    files = [n for n in names if not n.endswith("/")]
    if len(files) == 1 and files[0].endswith(".py"):
        return files[0]
    raise BundleInvalid(f"no entry point: add main.py or a {MANIFEST} naming one")


# ---- unpacking ---------------------------------------------------------------------------------

def unpack(data: bytes, dest: Path, *, max_files: int = DEFAULT_MAX_FILES,
           max_bytes: int = DEFAULT_MAX_BYTES, entry: bool = True) -> Path:
    """Extract a bundle into `dest` (created; it must not exist or be empty); return the path
    of its entry point (`dest` itself with ``entry=False``). Files are 0644 and folders 0755,
    whatever the archive says."""
    archive = _open(data, max_bytes)
    with archive:
        members = _members(archive, max_files, max_bytes)
        dest = Path(dest)
        dest.mkdir(mode=0o755, parents=True, exist_ok=True)
        if any(dest.iterdir()):
            raise BundleInvalid(f"{dest} is not empty")
        os.chmod(dest, 0o755)  # noqa: S103 - the sandbox's user must read the code
        root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
        try:
            budget = max_bytes
            names: set[str] = set()
            for info, path, kind in members:
                parent_fd = _makedirs(root_fd, path.parts if kind == "dir" else path.parts[:-1])
                try:
                    if kind == "file":
                        fd = os.open(path.parts[-1],
                                     os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                     0o644, dir_fd=parent_fd)
                        with os.fdopen(fd, "wb") as out:
                            budget -= _read(archive, info, budget, out.write)  # type: ignore[arg-type]
                            os.fchmod(out.fileno(), 0o644)
                        names.add(path.as_posix())
                finally:
                    if parent_fd != root_fd:
                        os.close(parent_fd)
        finally:
            os.close(root_fd)
    if not entry:
        return dest
    return dest / _entry(names, lambda name: (dest / name).read_bytes())


def _makedirs(root_fd: int, parts: tuple[str, ...]) -> int:
    """Open (creating) the folder `parts` below `root_fd` without following any symlink."""
    fd = root_fd
    for part in parts:
        with contextlib.suppress(FileExistsError):
            os.mkdir(part, 0o755, dir_fd=fd)
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        try:
            child = os.open(part, flags, dir_fd=fd)
        except OSError as exc:
            raise BundleInvalid(f"cannot create folder: {exc.strerror}", member=part) from None
        os.fchmod(child, 0o755)
        if fd != root_fd:
            os.close(fd)
        fd = child
    return fd


def listing(data: bytes, *, max_files: int = DEFAULT_MAX_FILES,
            max_bytes: int = DEFAULT_MAX_BYTES) -> list[dict[str, Any]]:
    """What a bundle holds, for an operator deciding whether to approve it: each file's path,
    size, SM3 digest, whether it is the entry point, and its text when it is UTF-8 (up to
    64 KiB). Checks the archive as `unpack` does, without writing anything."""
    archive = _open(data, max_bytes)
    with archive:
        members = _members(archive, max_files, max_bytes)
        contents: dict[str, bytes] = {}
        budget = max_bytes
        for info, path, kind in members:
            if kind == "file":
                chunks: list[bytes] = []
                budget -= _read(archive, info, budget, chunks.append)
                contents[path.as_posix()] = b"".join(chunks)
    entry = _entry(set(contents), contents.__getitem__)
    files: list[dict[str, Any]] = []
    for name, content in contents.items():
        shown: dict[str, Any] = {"path": name, "bytes": len(content),
                                 "sm3": sm3(content).hex(), "entry": name == entry}
        if len(content) <= _LISTING_TEXT:
            with contextlib.suppress(UnicodeDecodeError):
                shown["text"] = content.decode("utf-8")
        files.append(shown)
    return files
