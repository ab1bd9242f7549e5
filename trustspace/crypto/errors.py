"""The errors of the crypto core.

Every failure is a subclass of `CryptoError` that says what failed; verification never returns
False (a boolean is easy to ignore, an exception is not).
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base of every error raised by trustspace.crypto."""


class KeyFormatError(CryptoError):
    """A key could not be read: malformed PEM/DER, wrong algorithm, missing or wrong password."""


class InvalidPoint(KeyFormatError):
    """An elliptic-curve point is not on the SM2 curve (or is the point at infinity)."""


class SignatureInvalid(CryptoError):
    """An SM2 signature does not verify.

    `key_id` names the key it was checked against, `reason` says why.
    """

    def __init__(self, reason: str, key_id: str | None = None) -> None:
        self.reason = reason
        self.key_id = key_id
        super().__init__(f"signature invalid ({reason})" + (f" for key {key_id}" if key_id else ""))


class DecryptionFailed(CryptoError):
    """A ciphertext could not be decrypted: truncated, tampered, wrong key or wrong tag."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"decryption failed ({reason})")


class DocumentInvalid(CryptoError):
    """A signed document or envelope is malformed, unsupported or fails verification.

    `reason` is a short machine-readable code (e.g. ``digest-mismatch``); `detail` explains.
    """

    def __init__(self, reason: str, detail: str = "", key_id: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.key_id = key_id
        message = reason + (f": {detail}" if detail else "")
        super().__init__(message)


class NotARecipient(DocumentInvalid):
    """The envelope has no wrapped key for the decrypter's key id."""
