"""The `trustspace` command line, run as a real process: files in, files out, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trustspace.crypto import SM2PrivateKey, SM2PublicKey


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None,
        stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    import os

    return subprocess.run([sys.executable, "-m", "trustspace", *map(str, args)], cwd=cwd,
                          capture_output=True, input=stdin, check=False,
                          env={**os.environ, **(env or {})}, timeout=60)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    (d / "pw").write_text("s3cret\n")
    assert run("keys", "new", "alice.pem", "--password-file", "pw", cwd=d).returncode == 0
    assert run("keys", "new", "bob.pem", cwd=d).returncode == 0
    (d / "data.csv").write_bytes(b"age,count\n30,12\n40,9\n")
    return d


def test_keys_new_writes_usable_files(home: Path) -> None:
    assert b"ENCRYPTED PRIVATE KEY" in (home / "alice.pem").read_bytes()
    assert (home / "alice.pem").stat().st_mode & 0o077 == 0  # private key not world-readable
    alice = SM2PrivateKey.from_pem((home / "alice.pem").read_bytes(), b"s3cret")
    assert SM2PublicKey.from_pem((home / "alice.pub.pem").read_bytes()) == alice.public_key
    again = run("keys", "new", "alice.pem", cwd=home)
    assert again.returncode == 2 and b"exists" in again.stderr
    shown = run("keys", "show", "alice.pub.pem", cwd=home)
    assert shown.returncode == 0 and alice.key_id.encode() in shown.stdout


def test_sign_and_verify(home: Path) -> None:
    signed = run("sign", "--key", "alice.pem", "--password-file", "pw", "data.csv",
                 "--out", "data.sig", cwd=home)
    assert signed.returncode == 0, signed.stderr
    ok = run("verify", "--pub", "alice.pub.pem", "--sig", "data.sig", "data.csv", cwd=home)
    assert ok.returncode == 0 and ok.stdout.startswith(b"OK")
    (home / "tampered.csv").write_bytes((home / "data.csv").read_bytes().replace(b"12", b"13"))
    bad = run("verify", "--pub", "alice.pub.pem", "--sig", "data.sig", "tampered.csv", cwd=home)
    assert bad.returncode == 1
    assert bad.stderr.decode().count("\n") == 1 and bad.stderr.startswith(b"refused:")
    wrong_id = run("verify", "--pub", "alice.pub.pem", "--sig", "data.sig", "--id", "x",
                   "data.csv", cwd=home)
    assert wrong_id.returncode == 1


def test_password_from_environment_and_missing_password(home: Path) -> None:
    ok = run("sign", "--key", "alice.pem", "--password-env", "ALICE_PW", "data.csv",
             "--out", "env.sig", cwd=home, env={"ALICE_PW": "s3cret"})
    assert ok.returncode == 0, ok.stderr
    missing = run("sign", "--key", "alice.pem", "data.csv", "--out", "x.sig", cwd=home)
    assert missing.returncode == 2 and b"password-protected" in missing.stderr
    wrong = run("sign", "--key", "alice.pem", "--password-env", "ALICE_PW", "data.csv",
                "--out", "x.sig", cwd=home, env={"ALICE_PW": "nope"})
    assert wrong.returncode == 2 and b"wrong password" in wrong.stderr
    assert b"nope" not in wrong.stderr + wrong.stdout  # secrets never echoed
    assert not (home / "x.sig").exists()


def test_envelope_encrypt_decrypt_for_several_recipients(home: Path) -> None:
    enc = run("encrypt", "--to", "alice.pub.pem", "--to", "bob.pub.pem", "data.csv",
              "--out", "data.env", cwd=home)
    assert enc.returncode == 0, enc.stderr
    assert len(json.loads((home / "data.env").read_bytes())["recipients"]) == 2
    dec = run("decrypt", "--key", "bob.pem", "data.env", "--out", "bob.csv", cwd=home)
    assert dec.returncode == 0 and (home / "bob.csv").read_bytes() == \
        (home / "data.csv").read_bytes()
    dec = run("decrypt", "--key", "alice.pem", "--password-file", "pw", "data.env",
              "--out", "alice.csv", cwd=home)
    assert dec.returncode == 0 and (home / "alice.csv").read_bytes() == \
        (home / "data.csv").read_bytes()


def test_raw_sm2_and_refusals(home: Path) -> None:
    enc = run("encrypt", "--raw", "--to", "bob.pub.pem", "data.csv", "--out", "data.sm2",
              cwd=home)
    assert enc.returncode == 0
    dec = run("decrypt", "--key", "bob.pem", "data.sm2", "--out", "-", cwd=home)
    assert dec.returncode == 0 and dec.stdout == (home / "data.csv").read_bytes()
    not_mine = run("decrypt", "--key", "alice.pem", "--password-file", "pw", "data.sm2",
                   "--out", "never.csv", cwd=home)
    assert not_mine.returncode == 1 and b"refused" in not_mine.stderr
    assert not (home / "never.csv").exists()
    two = run("encrypt", "--raw", "--to", "bob.pub.pem", "--to", "alice.pub.pem", "data.csv",
              "--out", "x", cwd=home)
    assert two.returncode == 2 and b"exactly one" in two.stderr
    private_as_public = run("encrypt", "--to", "bob.pem", "data.csv", "--out", "x", cwd=home)
    assert private_as_public.returncode == 2 and b"private key" in private_as_public.stderr


def test_stdin_and_bad_input(home: Path) -> None:
    signed = run("sign", "--key", "bob.pem", "-", "--out", "stdin.sig", cwd=home,
                 stdin=b"piped")
    assert signed.returncode == 0
    ok = run("verify", "--pub", "bob.pub.pem", "--sig", "stdin.sig", "-", cwd=home,
             stdin=b"piped")
    assert ok.returncode == 0
    missing = run("verify", "--pub", "nope.pem", "--sig", "stdin.sig", "-", cwd=home)
    assert missing.returncode == 2 and missing.stderr.startswith(b"error:")
    (home / "junk.pem").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    junk = run("verify", "--pub", "junk.pem", "--sig", "stdin.sig", "-", cwd=home, stdin=b"x")
    assert junk.returncode == 2 and b"not an SM2 public key" in junk.stderr
    usage = run("sign", cwd=home)
    assert usage.returncode == 2


def test_help_everywhere(home: Path) -> None:
    for args in ([], ["keys"], ["keys", "new"], ["sign"], ["verify"], ["encrypt"], ["decrypt"],
                 ["demo"]):
        out = run(*args, "--help", cwd=home)
        assert out.returncode == 0 and b"Usage" in out.stdout, args
