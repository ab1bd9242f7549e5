"""SuperNode authentication keys and their binding to a provider's identity.

Flower authenticates a SuperNode by an OpenSSH-format ECDSA key on a NIST curve, registered
with the SuperLink (`flwr supernode register`). Flower knows nothing of who holds the key: the
provider says so in a signed document, SM2-signed with the key of its membership credential,
and the consumer registers a key only after `verify_binding` accepted that document.

Binding document (a `trustspace.crypto` signed document)::

    type: "trustspace.supernode-key-binding"
    body: {"version": 1, "provider": "<participant id>", "providerKeyId": "<SM2 key id>",
           "superNodeKey": "ecdsa-sha2-nistp384 AAAA...", "superNodeKeyDigest": "sm3:<hex>"}
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from trustspace.crypto import (
    DocumentInvalid,
    SignedDocument,
    Signer,
    SM2PublicKey,
    sign_document,
    sm3,
    verify_document,
)

BINDING_TYPE = "trustspace.supernode-key-binding"
BINDING_VERSION = 1
# Flower 1.42 accepts ECDSA keys on NIST curves and refuses ed25519 (exit 302).
_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_BODY_FIELDS = {"version", "provider", "providerKeyId", "superNodeKey", "superNodeKeyDigest"}


class BindingReason(enum.StrEnum):
    SIGNATURE = "binding-signature-invalid"
    MALFORMED = "binding-malformed"
    WRONG_PROVIDER = "binding-wrong-provider"
    KEY_MISMATCH = "binding-key-mismatch"
    BAD_KEY = "binding-bad-key"


class BindingInvalid(Exception):
    """A SuperNode key binding was refused; `reason` says which check failed."""

    def __init__(self, reason: BindingReason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


@dataclass(frozen=True)
class SuperNodeKey:
    """An ECDSA P-384 key pair in the OpenSSH formats Flower reads."""

    private_openssh: bytes
    public_openssh: bytes

    @classmethod
    def generate(cls) -> SuperNodeKey:
        key = ec.generate_private_key(ec.SECP384R1())
        private = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH)
        return cls(private, public)

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """Write `<name>` (mode 0600) and `<name>.pub`; return both paths."""
        directory.mkdir(parents=True, exist_ok=True)
        private, public = directory / name, directory / f"{name}.pub"
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.private_openssh)
        public.write_bytes(self.public_openssh + b"\n")
        return private, public


def public_key_digest(public_openssh: bytes) -> str:
    """``sm3:<hex>`` of the key's OpenSSH wire blob (the base64 field, decoded)."""
    return "sm3:" + sm3(_load_public(public_openssh).public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)).hex()


def _load_public(public_openssh: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_ssh_public_key(public_openssh.strip())
    except (ValueError, TypeError) as exc:
        raise BindingInvalid(BindingReason.BAD_KEY, f"not an OpenSSH public key: {exc}") \
            from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _CURVES):
        raise BindingInvalid(BindingReason.BAD_KEY, "Flower needs ECDSA on a NIST curve")
    return key


def _canonical_openssh(public_openssh: bytes) -> str:
    """The key as `<type> <base64>`, comment dropped."""
    return _load_public(public_openssh).public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode("ascii")


def bind_supernode_key(provider_id: str, public_openssh: bytes, signer: Signer,
                       signed_at: str | None = None) -> SignedDocument:
    """The provider's signed statement that this SuperNode key is its own."""
    if not provider_id:
        raise ValueError("a binding names its provider")
    body = {"version": BINDING_VERSION, "provider": provider_id,
            "providerKeyId": signer.key_id,
            "superNodeKey": _canonical_openssh(public_openssh),
            "superNodeKeyDigest": public_key_digest(public_openssh)}
    return sign_document(BINDING_TYPE, body, signer, role="provider", signed_at=signed_at)


@dataclass(frozen=True)
class KeyBinding:
    provider: str
    provider_key_id: str
    public_openssh: bytes
    digest: str  # of the binding document


def verify_binding(doc: SignedDocument | bytes | dict[str, Any], provider_id: str,
                   provider_key: SM2PublicKey,
                   public_openssh: bytes | None = None) -> KeyBinding:
    """Check that `doc` binds a SuperNode key to `provider_id`, signed by `provider_key` (the
    key of the provider's membership credential); if `public_openssh` is given, that it is
    this key. Raise `BindingInvalid` naming the first check that failed."""
    try:
        parsed = verify_document(doc, [provider_key], expected_type=BINDING_TYPE,
                                 required_signers=[provider_key.key_id])
    except DocumentInvalid as exc:
        raise BindingInvalid(BindingReason.SIGNATURE, str(exc)) from None
    body = parsed.body
    if set(body) != _BODY_FIELDS or body["version"] != BINDING_VERSION:
        raise BindingInvalid(BindingReason.MALFORMED,
                             f"fields {sorted(body)}, version {body.get('version')!r}")
    if body["provider"] != provider_id or body["providerKeyId"] != provider_key.key_id:
        raise BindingInvalid(BindingReason.WRONG_PROVIDER,
                             f"the binding names {body['provider']!r}, not {provider_id!r}")
    key = body["superNodeKey"]
    if not isinstance(key, str):
        raise BindingInvalid(BindingReason.MALFORMED, "superNodeKey must be a string")
    key_bytes = key.encode("ascii", "replace")
    if _canonical_openssh(key_bytes) != key \
            or public_key_digest(key_bytes) != body["superNodeKeyDigest"]:
        raise BindingInvalid(BindingReason.MALFORMED, "superNodeKey or its digest")
    if public_openssh is not None and _canonical_openssh(public_openssh) != key:
        raise BindingInvalid(BindingReason.KEY_MISMATCH,
                             "the SuperNode presents another key than the one bound")
    return KeyBinding(body["provider"], body["providerKeyId"], key_bytes, parsed.digest)
