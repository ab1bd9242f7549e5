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

import hashlib
import os
import stat
import subprocess
import sys
import tempfile
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


def fab_sha256(root: Path, bin_dir: Path | None = None) -> str:
    """The sha256 (hex) of the app archive (FAB) Flower builds from `root`: what a SuperNode
    receives when a consumer runs that app. Flower builds it deterministically (fixed file
    times, its own file selection, its pyproject.toml rewritten), so the provider rebuilds it
    from the app it approved with the same `flwr build` and compares (`clientapp_sandbox.Guard`)."""
    app_files(root)  # the same refusals as the digest
    flwr = Path(bin_dir or Path(sys.executable).parent) / "flwr"
    with tempfile.TemporaryDirectory(prefix="ts-fab-") as out:
        done = subprocess.run([str(flwr), "build", "--app", str(Path(root).resolve())],  # noqa: S603
                              cwd=out, capture_output=True, timeout=120,
                              env={**os.environ, "FLWR_HOME": out,
                                   "FLWR_TELEMETRY_ENABLED": "0",
                                   "FLWR_DISABLE_UPDATE_CHECK": "1"})
        built = list(Path(out).glob("*.fab"))
        if done.returncode != 0 or len(built) != 1:
            raise AppInvalid("flwr build failed: " + (done.stdout + done.stderr).decode(
                errors="replace")[-400:])
        return hashlib.sha256(built[0].read_bytes()).hexdigest()
