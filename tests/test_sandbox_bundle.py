"""Code bundles: deterministic packing, and unpack's refusals (zip-slip, symlinks, bombs ...)."""

from __future__ import annotations

import io
import os
import stat
import time
import warnings
import zipfile
from pathlib import Path

import pytest

from trustspace.crypto import sm3
from trustspace.sandbox import BundleInvalid, digest, listing, pack, unpack

KIB = 1024


def make_zip(*members: tuple[str, bytes] | zipfile.ZipInfo | tuple[zipfile.ZipInfo, bytes],
             compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicates we build on purpose
        with zipfile.ZipFile(buffer, "w", compression) as archive:
            for member in members:
                if isinstance(member, zipfile.ZipInfo):
                    archive.writestr(member, b"")
                elif isinstance(member[0], zipfile.ZipInfo):
                    archive.writestr(member[0], member[1])
                else:
                    archive.writestr(member[0], member[1])
    return buffer.getvalue()


def unix_member(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def test_single_script(tmp_path: Path) -> None:
    script = tmp_path / "count.py"
    script.write_text("print(1)\n")
    data = pack(script)
    assert digest(data) == "sm3:" + sm3(data).hex()
    entry = unpack(data, tmp_path / "out")
    assert entry == tmp_path / "out" / "count.py"
    assert entry.read_text() == "print(1)\n"
    assert stat.S_IMODE(entry.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755


def test_pack_is_deterministic(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "lib").mkdir(parents=True)
    (src / "main.py").write_text("import lib.helpers\n")
    (src / "lib" / "helpers.py").write_text("X = 1\n")
    first = pack(src)
    os.utime(src / "main.py", (time.time() + 3600, time.time() + 3600))
    (src / "lib" / "helpers.py").chmod(0o600)
    assert pack(src) == first


def test_pack_skips_caches_and_hidden_files_and_refuses_symlinks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "__pycache__").mkdir(parents=True)
    (src / ".git").mkdir()
    (src / "main.py").write_text("pass\n")
    (src / "main.pyc").write_bytes(b"\0")
    (src / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    (src / ".git" / "config").write_text("[core]\n")
    (src / ".env").write_text("SECRET=1\n")
    names = zipfile.ZipFile(io.BytesIO(pack(src))).namelist()
    assert names == ["main.py"]
    (src / "link.py").symlink_to("/etc/passwd")
    with pytest.raises(BundleInvalid, match="link.py: only regular files"):
        pack(src)


def test_entry_points(tmp_path: Path) -> None:
    manifest = make_zip(("trustspace-job.toml", b'entry = "app/run.py"\n'),
                        ("app/run.py", b"pass\n"), ("main.py", b"pass\n"))
    assert unpack(manifest, tmp_path / "a") == tmp_path / "a" / "app" / "run.py"
    assert unpack(make_zip(("main.py", b""), ("x.py", b"")), tmp_path / "b").name == "main.py"
    with pytest.raises(BundleInvalid, match="no entry point"):
        unpack(make_zip(("a.py", b""), ("b.py", b"")), tmp_path / "c")
    with pytest.raises(BundleInvalid, match="no entry point"):
        unpack(make_zip(("data.csv", b"")), tmp_path / "d")
    for bad in (b'entry = "missing.py"\n', b'entry = "x.txt"\n', b'entry = "../main.py"\n',
                b'entry = "main.py"\nextra = 1\n', b"entry = [", b'entry = "/main.py"\n'):
        with pytest.raises(BundleInvalid):
            unpack(make_zip(("trustspace-job.toml", bad), ("main.py", b""), ("x.txt", b"")),
                   tmp_path / f"e{hash(bad)}")


@pytest.mark.parametrize("name", [
    "/etc/cron.d/evil", "../evil.py", "a/../../evil.py", "a/./b.py", "a//b.py", "..",
    "a\\..\\evil.py", "evil\x01.py", "a/" + "x" * 300,
])
def test_unpack_refuses_path_tricks(tmp_path: Path, name: str) -> None:
    with pytest.raises(BundleInvalid):
        unpack(make_zip(("main.py", b"pass\n"), (name, b"x")), tmp_path / "out")
    assert not (tmp_path / "evil.py").exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("mode, match", [
    (stat.S_IFLNK | 0o777, "symlinks are not allowed"),
    (stat.S_IFIFO | 0o644, "only regular files and folders"),
    (stat.S_IFCHR | 0o644, "only regular files and folders"),
    (stat.S_IFDIR | 0o755, "folder entry must end with '/'"),
])
def test_unpack_refuses_special_files(tmp_path: Path, mode: int, match: str) -> None:
    data = make_zip(("main.py", b""), (unix_member("link.py", mode), b"/etc/passwd"))
    with pytest.raises(BundleInvalid, match=match):
        unpack(data, tmp_path / "out")
    assert not (tmp_path / "out" / "link.py").is_symlink()


def test_unpack_refuses_duplicates_and_conflicts(tmp_path: Path) -> None:
    with pytest.raises(BundleInvalid, match="duplicate name"):
        unpack(make_zip(("main.py", b"a"), ("main.py", b"b")), tmp_path / "a")
    with pytest.raises(BundleInvalid, match="both a file and a folder"):
        unpack(make_zip(("main.py", b""), ("lib", b""), ("lib/x.py", b"")), tmp_path / "b")
    with pytest.raises(BundleInvalid, match="duplicate name"):  # a folder entry and a file
        unpack(make_zip(("main.py", b""), zipfile.ZipInfo("main.py/")), tmp_path / "c")


def test_unpack_limits(tmp_path: Path) -> None:
    many = make_zip(("main.py", b""), *((f"m{i}.py", b"") for i in range(10)))
    with pytest.raises(BundleInvalid, match="11 members"):
        unpack(many, tmp_path / "a", max_files=10)
    big = make_zip(("main.py", b"#" * (8 * KIB)))
    with pytest.raises(BundleInvalid, match="declare more than"):
        unpack(big, tmp_path / "b", max_bytes=4 * KIB)
    with pytest.raises(BundleInvalid, match="the archive is"):
        unpack(make_zip(("main.py", os.urandom(8 * KIB)), compression=zipfile.ZIP_STORED),
               tmp_path / "c", max_bytes=4 * KIB)


def test_unpack_stops_a_zip_bomb_that_lies_about_its_size(tmp_path: Path) -> None:
    """A member that declares 100 bytes and inflates to 50 MiB: refused once it passes what it
    declared, before anything large is written."""
    data = bytearray(make_zip(("main.py", b"pass\n"), ("bomb.bin", bytes(50 * 1024 * KIB))))
    archive = zipfile.ZipFile(io.BytesIO(bytes(data)))
    info = archive.getinfo("bomb.bin")
    # patch the uncompressed size in the local header (offset 22) and the central directory
    data[info.header_offset + 22:info.header_offset + 26] = (100).to_bytes(4, "little")
    central = bytes(data).rindex(b"PK\x01\x02")
    assert data[central + 46:central + 54] == b"bomb.bin"
    data[central + 24:central + 28] = (100).to_bytes(4, "little")
    started = time.monotonic()
    with pytest.raises(BundleInvalid, match="bomb.bin"):
        unpack(bytes(data), tmp_path / "out", max_bytes=5 * 1024 * KIB)
    assert time.monotonic() - started < 1
    bomb = tmp_path / "out" / "bomb.bin"
    assert not bomb.exists() or bomb.stat().st_size <= 100


def test_unpack_refuses_bad_archives(tmp_path: Path) -> None:
    with pytest.raises(BundleInvalid, match="not a valid zip"):
        unpack(b"not a zip at all", tmp_path / "a")
    encrypted = bytearray(make_zip(("main.py", b"pass\n"), compression=zipfile.ZIP_STORED))
    central = bytes(encrypted).rindex(b"PK\x01\x02")
    encrypted[central + 8] |= 1  # general purpose flag bit 0: encrypted
    with pytest.raises(BundleInvalid, match="encrypted"):
        unpack(bytes(encrypted), tmp_path / "b")
    corrupt = bytearray(make_zip(("main.py", b"print('hello')\n"), compression=zipfile.ZIP_STORED))
    corrupt[corrupt.index(b"hello")] ^= 0xFF
    with pytest.raises(BundleInvalid, match="corrupt member"):
        unpack(bytes(corrupt), tmp_path / "c")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old.py").write_text("")
    with pytest.raises(BundleInvalid, match="not empty"):
        unpack(make_zip(("main.py", b"")), tmp_path / "d")


def test_listing(tmp_path: Path) -> None:
    data = make_zip(("main.py", b"print(1)\n"), ("model.bin", b"\xff\xfe"))
    files = listing(data)
    assert files == [
        {"path": "main.py", "bytes": 9, "sm3": sm3(b"print(1)\n").hex(), "entry": True,
         "text": "print(1)\n"},
        {"path": "model.bin", "bytes": 2, "sm3": sm3(b"\xff\xfe").hex(), "entry": False},
    ]
    with pytest.raises(BundleInvalid, match="symlinks"):
        listing(make_zip(("main.py", b""), (unix_member("x", stat.S_IFLNK | 0o777), b"/")))
