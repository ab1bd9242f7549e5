"""Digital envelopes: content under a fresh SM4-GCM key, that key wrapped with SM2 for each of N
recipients, so exactly the parties named (e.g. provider, consumer and regulator) can read it.

Wire form (a JSON object)::

    {"format": "trustspace.envelope/1", "alg": "SM4-GCM", "keyWrap": "SM2",
     "recipients": [{"keyId": "<SM3 of SPKI>", "wrappedKey": "<b64url DER C1C3C2>"}, ...],
     "nonce": "<b64url 12 bytes>", "ciphertext": "<b64url ciphertext ‖ tag>"}

The GCM additional data is JCS of every field but "ciphertext", followed by the caller's own
associated data, so no recipient can be added, dropped or altered without the tag failing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import sm4
from .errors import DecryptionFailed, DocumentInvalid, NotARecipient
from .jcs import b64u_decode, b64u_encode, canonical_json, load_json, versioned_object
from .signer import Decrypter
from .sm2 import SM2PublicKey

FORMAT = "trustspace.envelope/1"
ALG = "SM4-GCM"
KEY_WRAP = "SM2"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_FIELDS = {"format", "alg", "keyWrap", "recipients", "nonce", "ciphertext"}


@dataclass(frozen=True)
class Envelope:
    recipients: tuple[tuple[str, bytes], ...]  # (key id, wrapped content key)
    nonce: bytes
    ciphertext: bytes

    @property
    def recipient_ids(self) -> tuple[str, ...]:
        return tuple(kid for kid, _ in self.recipients)

    def _header(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "alg": ALG,
            "keyWrap": KEY_WRAP,
            "recipients": [
                {"keyId": kid, "wrappedKey": b64u_encode(wrapped)}
                for kid, wrapped in self.recipients
            ],
            "nonce": b64u_encode(self.nonce),
        }

    def _aad(self, associated_data: bytes) -> bytes:
        return canonical_json(self._header()) + associated_data

    def to_json(self) -> dict[str, Any]:
        return {**self._header(), "ciphertext": b64u_encode(self.ciphertext)}

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, obj: object) -> Envelope:
        obj = versioned_object(obj, "an envelope", FORMAT, _FIELDS)
        if obj["alg"] != ALG or obj["keyWrap"] != KEY_WRAP:
            raise DocumentInvalid("unsupported-algorithm", f"{obj['alg']!r}/{obj['keyWrap']!r}")
        entries = obj["recipients"]
        if not isinstance(entries, list) or not entries:
            raise DocumentInvalid("malformed", "recipients must be a non-empty list")
        recipients = []
        for entry in entries:
            if not isinstance(entry, dict) or set(entry) != {"keyId", "wrappedKey"}:
                raise DocumentInvalid("malformed", "a recipient is {keyId, wrappedKey}")
            kid = entry["keyId"]
            if not isinstance(kid, str) or not _HEX64.fullmatch(kid):
                raise DocumentInvalid("malformed", "keyId must be 64 lowercase hex digits")
            recipients.append((kid, b64u_decode(entry["wrappedKey"], "wrappedKey")))
        if len({kid for kid, _ in recipients}) != len(recipients):
            raise DocumentInvalid("malformed", "a recipient is listed twice")
        nonce = b64u_decode(obj["nonce"], "nonce")
        if len(nonce) != sm4.GCM_NONCE_SIZE:
            raise DocumentInvalid("malformed", "nonce must be 12 bytes")
        return cls(tuple(recipients), nonce, b64u_decode(obj["ciphertext"], "ciphertext"))

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        return cls.from_json(load_json(data))


def seal(plaintext: bytes, recipients: Iterable[SM2PublicKey],
         associated_data: bytes = b"") -> Envelope:
    """Encrypt `plaintext` so that each recipient, and no one else, can open it."""
    unique: dict[str, SM2PublicKey] = {}
    for key in recipients:
        unique.setdefault(key.key_id, key)
    if not unique:
        raise ValueError("an envelope needs at least one recipient")
    content_key = sm4.new_key()
    wrapped = tuple((kid, key.encrypt(content_key)) for kid, key in sorted(unique.items()))
    unsealed = Envelope(wrapped, os.urandom(sm4.GCM_NONCE_SIZE), b"")
    ciphertext = sm4.gcm_encrypt(content_key, unsealed.nonce, plaintext,
                                 unsealed._aad(associated_data))
    return Envelope(wrapped, unsealed.nonce, ciphertext)


def open_sealed(envelope: Envelope | Mapping[str, Any] | bytes, decrypter: Decrypter,
                associated_data: bytes = b"") -> bytes:
    """Decrypt an envelope with one recipient's key; raises NotARecipient, DecryptionFailed or
    DocumentInvalid, never returns unauthenticated data."""
    if isinstance(envelope, bytes):
        envelope = Envelope.from_bytes(envelope)
    elif not isinstance(envelope, Envelope):
        envelope = Envelope.from_json(dict(envelope))
    wrapped = dict(envelope.recipients).get(decrypter.key_id)
    if wrapped is None:
        raise NotARecipient("not-a-recipient", "the envelope is not addressed to this key",
                            key_id=decrypter.key_id)
    content_key = decrypter.decrypt(wrapped)
    if len(content_key) != sm4.KEY_SIZE:
        raise DecryptionFailed("wrapped key has the wrong length")
    return sm4.gcm_decrypt(content_key, envelope.nonce, envelope.ciphertext,
                           envelope._aad(associated_data))
