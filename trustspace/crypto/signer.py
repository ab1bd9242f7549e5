"""The seams where private keys are used.

Every private-key operation in trustspace goes through these two protocols, so a hardware
cryptographic module (GM/T 0018 SDF, PKCS#11) can replace the key file without touching callers.
`SM2PrivateKey` implements both.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .sm2 import DEFAULT_USER_ID, CiphertextForm, SM2PublicKey


@runtime_checkable
class Signer(Protocol):
    @property
    def key_id(self) -> str: ...

    @property
    def public_key(self) -> SM2PublicKey: ...

    def sign(self, message: bytes, user_id: bytes = DEFAULT_USER_ID) -> bytes:
        """SM2 signature (DER r, s) of `message`, Z computed over `user_id`."""
        ...


@runtime_checkable
class Decrypter(Protocol):
    @property
    def key_id(self) -> str: ...

    @property
    def public_key(self) -> SM2PublicKey: ...

    def decrypt(self, ciphertext: bytes, form: CiphertextForm = CiphertextForm.DER) -> bytes:
        """SM2-decrypt a ciphertext addressed to this key."""
        ...
