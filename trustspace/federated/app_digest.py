"""The digest of a Flower app directory: what a provider approves before its SuperNode runs it.

``"sm3:" + hex(SM3(JCS({"format": "trustspace.flower-app/1", "files": [[path, sm3], ...]})))``
over every regular file under the directory, by relative POSIX path in sorted order, each with
the hex SM3 of its bytes. Only ``__pycache__`` folders and ``*.pyc`` files are left out (Python
writes them; Flower leaves them out of the app archive it ships to SuperNodes); everything else
counts, hidden files included, so no file Flower might ship escapes the digest. Symlinks and
special files are refused: what they point at could change without the digest changing.

`trustspace.sandbox.pack` is not reused: it needs a job entry point, and a Flower app has none
(its entry points are named in its pyproject.toml).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from trustspace.crypto import canonical_json, sm3, sm3_file

FORMAT = "trustspace.flower-app/1"


class AppInvalid(ValueError):
    """The directory cannot be digested (not a directory, a symlink, a special file)."""


def app_files(root: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of every file the digest covers, sorted by path."""
    root = Path(root)
    if root.is_symlink() or not root.is_dir():
        raise AppInvalid(f"{root} is not a directory")
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in dirnames + filenames:
            path = base / name
            rel = path.relative_to(root).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISDIR(mode) or name.endswith(".pyc"):
                continue
            if not stat.S_ISREG(mode):
                raise AppInvalid(f"{rel}: only regular files and folders (no symlinks)")
            files.append((rel, path))
    if not files:
        raise AppInvalid(f"{root} holds no files")
    return sorted(files)


def app_digest(root: Path) -> str:
    """``sm3:<hex>`` of the app directory `root` (see the module docstring)."""
    listing = [[rel, sm3_file(path).hex()] for rel, path in app_files(root)]
    return "sm3:" + sm3(canonical_json({"format": FORMAT, "files": listing})).hex()
