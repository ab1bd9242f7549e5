"""The crypto core: SM2, SM3, SM4, canonical JSON, signed documents and digital envelopes.

Recipes first (`sign_document`, `verify_document`, `seal`, `open_sealed`); the primitives
(`sm3`, `sm4`, `SM2PrivateKey`, ...) for what the recipes do not cover.
"""

from . import sm4
from .document import Canonical, SignedDocument, sign_document, verify_document
from .envelope import Envelope, open_sealed, seal
from .errors import (
    CryptoError,
    DecryptionFailed,
    DocumentInvalid,
    InvalidPoint,
    KeyFormatError,
    NotARecipient,
    SignatureInvalid,
)
from .jcs import canonical_json
from .signer import Decrypter, Signer
from .sm2 import DEFAULT_USER_ID, CiphertextForm, SM2PrivateKey, SM2PublicKey, z_value
from .sm3 import SM3, hmac_sm3, hmac_sm3_verify, sm3, sm3_file, sm3_kdf, sm3_stream

__all__ = [
    "DEFAULT_USER_ID",
    "SM3",
    "Canonical",
    "CiphertextForm",
    "CryptoError",
    "DecryptionFailed",
    "Decrypter",
    "DocumentInvalid",
    "Envelope",
    "InvalidPoint",
    "KeyFormatError",
    "NotARecipient",
    "SM2PrivateKey",
    "SM2PublicKey",
    "SignatureInvalid",
    "SignedDocument",
    "Signer",
    "canonical_json",
    "hmac_sm3",
    "hmac_sm3_verify",
    "open_sealed",
    "seal",
    "sign_document",
    "sm3",
    "sm3_file",
    "sm3_kdf",
    "sm3_stream",
    "sm4",
    "verify_document",
    "z_value",
]
