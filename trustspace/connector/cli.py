"""The `trustspace` command line. Every failure prints one line on stderr and exits non-zero:
1 when a verification or decryption is refused, 2 for bad input or usage."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from trustspace.crypto import (
    CryptoError,
    DecryptionFailed,
    DocumentInvalid,
    Envelope,
    SignatureInvalid,
    SM2PrivateKey,
    SM2PublicKey,
    open_sealed,
    seal,
)
from trustspace.crypto.sm2 import CiphertextForm

from .cli_node import NodeCommandError
from .cli_node import register as register_node_commands

app = typer.Typer(
    help="trustspace: a privacy-preserving trusted data exchange node (SM2/SM3/SM4).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
keys_app = typer.Typer(help="Create and inspect SM2 keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
register_node_commands(app)

EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2

PasswordFile = Annotated[
    Path | None,
    typer.Option(help="Read the private key's password from this file (first line)."),
]
PasswordEnv = Annotated[
    str | None,
    typer.Option(help="Read the private key's password from this environment variable."),
]
UserId = Annotated[
    str, typer.Option("--id", help="SM2 user ID for the Z value (GM/T 0009 default).")
]


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def _password(password_file: Path | None, password_env: str | None) -> bytes | None:
    if password_file is not None and password_env is not None:
        raise CliError("give --password-file or --password-env, not both")
    if password_file is not None:
        lines = password_file.read_bytes().splitlines()
        if not lines or not lines[0]:
            raise CliError(f"password file {password_file} is empty")
        return lines[0]
    if password_env is not None:
        value = os.environ.get(password_env)
        if not value:
            raise CliError(f"environment variable {password_env} is not set or empty")
        return value.encode()
    return None


def _read(path: Path) -> bytes:
    if str(path) == "-":
        return sys.stdin.buffer.read()
    return path.read_bytes()


def _write(path: Path, data: bytes, private: bool = False) -> None:
    if str(path) == "-":
        sys.stdout.buffer.write(data)
        return
    # Write beside the target and rename, so an interrupted run never leaves half a file.
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _private_key(path: Path, password_file: Path | None, password_env: str | None
                 ) -> SM2PrivateKey:
    return SM2PrivateKey.from_pem(_read(path), _password(password_file, password_env))


def _public_key(path: Path) -> SM2PublicKey:
    data = _read(path)
    if b"PRIVATE KEY" in data:
        raise CliError(f"{path} holds a private key; give the public key (trustspace keys new "
                       "writes it as *.pub.pem)")
    return SM2PublicKey.from_pem(data)


@keys_app.command("new")
def keys_new(
    out: Annotated[Path, typer.Argument(help="Private key file to write (PEM, PKCS#8).")],
    pub: Annotated[Path | None, typer.Option(help="Public key file (default: OUT.pub.pem).")]
    = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    force: Annotated[bool, typer.Option(help="Overwrite existing files.")] = False,
) -> None:
    """Generate an SM2 key pair; with a password the private key is encrypted (SM4-CBC)."""
    pub = pub or out.with_name(out.name.removesuffix(".pem") + ".pub.pem")
    for target in (out, pub):
        if target.exists() and not force:
            raise CliError(f"{target} exists; use --force to overwrite")
    password = _password(password_file, password_env)
    key = SM2PrivateKey.generate()
    _write(out, key.to_pem(password), private=True)
    _write(pub, key.public_key.to_pem())
    typer.echo(f"key id {key.key_id}\nprivate key {out}{' (encrypted)' if password else ''}"
               f"\npublic key {pub}")


@keys_app.command("show")
def keys_show(
    key: Annotated[Path, typer.Argument(help="Public or private key file (PEM).")],
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
) -> None:
    """Print a key's id (SM3 of its SubjectPublicKeyInfo) and public key."""
    data = _read(key)
    if b"PRIVATE KEY" in data:
        public = SM2PrivateKey.from_pem(data, _password(password_file, password_env)).public_key
    else:
        public = SM2PublicKey.from_pem(data)
    typer.echo(f"key id {public.key_id}\npoint {public.point.hex()}")
    typer.echo(public.to_pem().decode(), nl=False)


@app.command()
def sign(
    key: Annotated[Path, typer.Option(help="Private key (PEM).")],
    infile: Annotated[Path, typer.Argument(help="File to sign ('-' for stdin).")],
    out: Annotated[Path, typer.Option(help="Signature file: DER (r, s).")],
    user_id: UserId = "1234567812345678",
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
) -> None:
    """Sign a file with SM2 (SM3 over Z and the file), DER signature as OpenSSL writes it."""
    signer = _private_key(key, password_file, password_env)
    _write(out, signer.sign(_read(infile), user_id.encode()))
    typer.echo(f"signed by key {signer.key_id}", err=str(out) == "-")


@app.command()
def verify(
    pub: Annotated[Path, typer.Option(help="Signer's public key (PEM).")],
    sig: Annotated[Path, typer.Option(help="Signature file (DER).")],
    infile: Annotated[Path, typer.Argument(help="Signed file ('-' for stdin).")],
    user_id: UserId = "1234567812345678",
) -> None:
    """Verify an SM2 signature; exit 0 only if it is valid."""
    key = _public_key(pub)
    key.verify(_read(sig), _read(infile), user_id.encode())
    typer.echo(f"OK: valid signature by key {key.key_id}")


@app.command()
def encrypt(
    to: Annotated[list[Path], typer.Option(help="Recipient public key (PEM); repeat for more.")],
    infile: Annotated[Path, typer.Argument(help="File to encrypt ('-' for stdin).")],
    out: Annotated[Path, typer.Option(help="Output file.")],
    raw: Annotated[bool, typer.Option(
        help="Plain SM2 (GM/T 0009 DER C1C3C2) to a single recipient, as `openssl pkeyutl "
             "-encrypt` does, instead of an SM4-GCM envelope.")] = False,
) -> None:
    """Encrypt a file for one or more recipients (digital envelope by default)."""
    recipients = [_public_key(p) for p in to]
    data = _read(infile)
    if raw:
        if len(recipients) != 1:
            raise CliError("--raw encrypts to exactly one recipient")
        if not data:
            raise CliError("SM2 cannot encrypt an empty file; use an envelope")
        _write(out, recipients[0].encrypt(data, CiphertextForm.DER))
    else:
        _write(out, seal(data, recipients).to_bytes())
    typer.echo(f"encrypted for {len(recipients)} recipient(s)", err=str(out) == "-")


@app.command()
def decrypt(
    key: Annotated[Path, typer.Option(help="Private key (PEM).")],
    infile: Annotated[Path, typer.Argument(help="Envelope or raw SM2 ciphertext ('-': stdin).")],
    out: Annotated[Path, typer.Option(help="Output file for the plaintext.")],
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
) -> None:
    """Decrypt an envelope or a raw SM2 ciphertext (DER) addressed to KEY."""
    decrypter = _private_key(key, password_file, password_env)
    data = _read(infile)
    if data.lstrip().startswith(b"{"):
        plaintext = open_sealed(Envelope.from_bytes(data), decrypter)
    else:
        plaintext = decrypter.decrypt(data, CiphertextForm.DER)
    _write(out, plaintext, private=True)


@app.command()
def demo(
    keep: Annotated[bool, typer.Option(
        "--keep", help="Leave the data space running afterwards, to explore (Ctrl-C stops it).")
    ] = False,
    ledger: Annotated[str, typer.Option(
        help="local: the authority's shared log; evm: each hospital's log anchored on a chain "
             "(--rpc, and TRUSTSPACE_DEMO_EVM_KEYS: four funded keys, owner first).")
    ] = "local",
    rpc: Annotated[str | None, typer.Option(help="The EVM node's JSON-RPC URL.")] = None,
) -> None:
    """Run the crypto self-check and the data-space story; exit 0 only if every check passed."""
    from trustspace.connector.demo import run

    if ledger not in ("local", "evm") or (ledger == "evm") != (rpc is not None):
        raise CliError("--ledger is local or evm, and evm needs --rpc URL (and only it)")
    keys = [k.strip() for k in os.environ.get("TRUSTSPACE_DEMO_EVM_KEYS", "").split(",")
            if k.strip()]
    raise typer.Exit(0 if run(keep=keep, rpc_url=rpc, chain_keys=keys) else EXIT_REFUSED)


def main() -> None:
    """Entry point: turn every expected failure into one line on stderr and an exit code.

    Usage errors and --help are handled by Typer itself (exit 2 and 0)."""
    try:
        app()
    except (SignatureInvalid, DecryptionFailed, DocumentInvalid) as exc:
        typer.echo(f"refused: {exc}", err=True)
        sys.exit(EXIT_REFUSED)
    except NodeCommandError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.code)
    except (CliError, CryptoError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.code if isinstance(exc, CliError) else EXIT_BAD_INPUT)
