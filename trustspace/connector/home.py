"""`trustspace init`: a node's home folder — identity key, trust anchor, config, operator token."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from trustspace.crypto import SM2PrivateKey, SM2PublicKey, sm3

from .config import CONFIG_FILE, Settings

TOKEN_FILE = "operator.token"  # noqa: S105 - a file name, not a secret


def token_digest(token: str) -> str:
    return "sm3:" + sm3(token.encode()).hex()


def write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def init_home(home: Path, *, name: str, public_url: str, port: int, authority: bool,
              authority_url: str | None = None, authority_key_pem: bytes | None = None,
              database_url: str = "", key_password: bytes | None = None,
              key_password_env: str | None = None) -> tuple[Settings, str]:
    """Create a node home; return its settings and the operator token (shown once)."""
    if (home / CONFIG_FILE).exists():
        raise FileExistsError(f"{home} already holds a node ({CONFIG_FILE} exists)")
    if authority:
        if authority_url or authority_key_pem:
            raise ValueError("the authority is its own trust anchor: no --authority-url/-key")
    elif not (authority_url and authority_key_pem):
        raise ValueError("a participant needs the authority's URL and public key")
    if authority_key_pem is not None:
        SM2PublicKey.from_pem(authority_key_pem)  # refuse a bad trust anchor before writing
    home.mkdir(parents=True, exist_ok=True)
    key = SM2PrivateKey.generate()
    token = secrets.token_urlsafe(32)
    settings = Settings(
        home=home, name=name, kind="authority" if authority else "participant",
        public_url=public_url.rstrip("/"), port=port, database_url=database_url,
        authority_url=authority_url.rstrip("/") if authority_url else None,
        operator_token_digest=token_digest(token), key_password_env=key_password_env,
    )
    write_private(settings.path(settings.key_file), key.to_pem(key_password))
    anchor = key.public_key.to_pem() if authority_key_pem is None else authority_key_pem
    settings.path(settings.authority_key_file).write_bytes(anchor)
    write_private(home / TOKEN_FILE, token.encode() + b"\n")
    settings.save()
    return settings, token


def read_token(home: Path) -> str:
    path = home / TOKEN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no operator token in {home}; pass --token")
    return path.read_text().strip()
