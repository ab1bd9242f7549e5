"""Signed tree heads: C2SP tlog-checkpoint on C2SP signed-note, signed with SM2.

A checkpoint (c2sp.org/tlog-checkpoint) is the note text

    <origin>\\n
    <tree size, ASCII decimal, no leading zeros>\\n
    <root hash, standard base64 (RFC 4648 §4)>\\n
    [<extension line>\\n ...]

followed, as every signed note (c2sp.org/signed-note), by a blank line and one or more lines

    — <key name> <base64(4-byte key ID ‖ signature)>\\n          (— is U+2014)

Signed-note assigns no signature type to SM2, so both of ours use type byte 0xff, "reserved
for signature types without an identifier byte assigned by this specification", followed (as it
recommends) by a longer identifier. Where the spec leaves the choice to us we use SM3:

* Log signature (identifier ``trustspace/sm2-note/v1``): an SM2 signature (GB/T 32918.2-2016,
  Z over the GM/T 0009 default ID ``1234567812345678``, DER-encoded (r, s)) over the note text
  as UTF-8, final newline included. Key ID, the first 4 bytes of

      SM3(key name ‖ 0x0A ‖ 0xFF ‖ "trustspace/sm2-note/v1" ‖ 0x0A ‖ SPKI)

* Cosignature (identifier ``trustspace/sm2-cosignature/v1``), following c2sp.org/tlog-cosignature
  with SM2 in place of Ed25519: the signature bytes are the 8-byte big-endian POSIX timestamp
  ``t`` (0 ≤ t ≤ 2^63 - 1) then the SM2 signature (as above) over

      "cosignature/v1\\n" ‖ "time " ‖ decimal(t) ‖ "\\n" ‖ note text

  Key ID, the first 4 bytes of

      SM3(key name ‖ 0x0A ‖ 0xFF ‖ "trustspace/sm2-cosignature/v1" ‖ 0x0A ‖ SPKI)

Here ``key name`` is UTF-8 and ``SPKI`` the 91-byte DER SubjectPublicKeyInfo of the SM2 key
with the uncompressed point (`SM2PublicKey.to_der`). signed-note RECOMMENDS SHA-256 for key
IDs; we use SM3, as everywhere in trustspace: a key ID only picks the key to try (an attacker
gains nothing by colliding one), and verifiers configured with our keys compute it the same way.
Like the Ed25519 cosignature, the cosigned message does not name the cosigner, so each
cosigner must have its own key.

Verification follows signed-note: lines whose (name, key ID) matches no known key are ignored;
a line from a known key that fails to verify rejects the whole note; a note with no verified
line from a known key is rejected. Errors are `NoteInvalid` with a `reason`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass

from trustspace.crypto import SignatureInvalid, Signer, SM2PublicKey, sm3

from .errors import NoteInvalid

ROOT_HASH_SIZE = 32  # SM3 and SHA-256 alike
MAX_SIGNATURES = 100  # signed-note: verifiers MUST accept at least 16
MAX_NOTE_CHARS = 1 << 20
MAX_TIMESTAMP = 2**63 - 1
MAX_TREE_SIZE = 2**64 - 1

_SIGNATURE_ID = b"\xfftrustspace/sm2-note/v1\n"
_COSIGNATURE_ID = b"\xfftrustspace/sm2-cosignature/v1\n"
_COSIGNATURE_HEADER = "cosignature/v1\n"
_DASH = "\u2014 "
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # signed-note: no controls but newline
_SIZE = re.compile("0|[1-9][0-9]{0,19}")


def _malformed(detail: str) -> NoteInvalid:
    return NoteInvalid("malformed", detail)


def _b64decode(text: str) -> bytes | None:
    """Strict, canonical standard base64 (RFC 4648 §4), or None: one encoding per value."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode() == text else None


def _name_problem(name: str) -> str | None:
    if not name:
        return "empty key name"
    if "+" in name or any(ch.isspace() for ch in name) or _CONTROL.search(name):
        return f"key name {name!r} has a space, a plus or a control character"
    return None


def _key_id(name: str, type_id: bytes, key: SM2PublicKey) -> bytes:
    return sm3(name.encode() + b"\n" + type_id + key.to_der())[:4]


def signature_key_id(name: str, key: SM2PublicKey) -> bytes:
    """The 4-byte key ID of a log's SM2 note signature (see the module docstring)."""
    return _key_id(name, _SIGNATURE_ID, key)


def cosignature_key_id(name: str, key: SM2PublicKey) -> bytes:
    """The 4-byte key ID of a witness's SM2 cosignature (see the module docstring)."""
    return _key_id(name, _COSIGNATURE_ID, key)


def _cosigned_message(body: str, timestamp: int) -> bytes:
    """tlog-cosignature's signed message: header, time line, then the note text."""
    return f"{_COSIGNATURE_HEADER}time {timestamp}\n{body}".encode()


# ---- the checkpoint ------------------------------------------------------------------------

def _line_problem(what: str, line: str) -> str | None:
    if not line:
        return f"empty {what}"
    if "\n" in line or _CONTROL.search(line):
        return f"{what} has a newline or control character"
    return None


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: who (origin), how many leaves (size) and their Merkle root."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", tuple(self.extensions))
        problem = _line_problem("origin", self.origin)
        if problem is None and not (
            isinstance(self.size, int) and not isinstance(self.size, bool)
            and 0 <= self.size <= MAX_TREE_SIZE
        ):
            problem = f"tree size {self.size!r} not an integer in [0, 2^64)"
        if problem is None and not (
            isinstance(self.root_hash, bytes) and len(self.root_hash) == ROOT_HASH_SIZE
        ):
            problem = f"root hash must be {ROOT_HASH_SIZE} bytes"
        for line in self.extensions:
            problem = problem or _line_problem("extension line", line)
        if problem:
            raise ValueError(problem)

    def body(self) -> str:
        """The note text (tlog-checkpoint §Note text), final newline included."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode()]
        return "".join(line + "\n" for line in [*lines, *self.extensions])

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        """Read a checkpoint's note text; NoteInvalid("malformed") unless well formed."""
        if not body.endswith("\n") or _CONTROL.search(body):
            raise _malformed("checkpoint text must end in a newline and hold no control chars")
        lines = body[:-1].split("\n")
        if len(lines) < 3:
            raise _malformed("a checkpoint has at least three lines")
        origin, size, root, *extensions = lines
        if not origin or not all(extensions):
            raise _malformed("empty origin or extension line")
        if not _SIZE.fullmatch(size) or int(size) > MAX_TREE_SIZE:
            raise _malformed(f"tree size {size!r} is not a decimal without leading zeros")
        root_hash = _b64decode(root)
        if root_hash is None or len(root_hash) != ROOT_HASH_SIZE:
            raise _malformed("root hash is not the base64 of a 32-byte hash")
        return cls(origin, int(size), root_hash, tuple(extensions))


# ---- the signed note -----------------------------------------------------------------------

@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key ID and the signature bytes after it."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{_DASH}{self.name} {base64.b64encode(self.key_id + self.signature).decode()}\n"

    @classmethod
    def parse_line(cls, line: str) -> NoteSignature:
        if not line.startswith(_DASH):
            raise _malformed("a signature line starts with an em dash and a space")
        fields = line[len(_DASH):].split(" ")
        if len(fields) != 2:
            raise _malformed("a signature line is: em dash, key name, base64 signature")
        name, encoded = fields
        problem = _name_problem(name)
        if problem:
            raise _malformed(problem)
        raw = _b64decode(encoded)
        if raw is None or len(raw) < 5:
            raise _malformed(f"signature of {name!r} is not base64 of key ID and signature")
        return cls(name, raw[:4], raw[4:])


@dataclass(frozen=True)
class SignedNote:
    """A signed note: its text (`body`, final newline included) and its signature lines."""

    body: str
    signatures: tuple[NoteSignature, ...]

    def text(self) -> str:
        return self.body + "\n" + "".join(sig.line() for sig in self.signatures)

    @classmethod
    def parse(cls, text: str | bytes) -> SignedNote:
        """Read a signed note (signed-note §Format); NoteInvalid("malformed") unless well
        formed. Nothing is verified here."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise _malformed("not UTF-8") from None
        if len(text) > MAX_NOTE_CHARS:
            raise _malformed("note too large")
        if _CONTROL.search(text):
            raise _malformed("control character other than newline")
        if not text.endswith("\n"):
            raise _malformed("a note ends with a newline")
        split = text.rfind("\n\n")  # the last empty line separates text and signatures
        if split < 0:
            raise _malformed("no blank line before the signatures")
        body, block = text[: split + 1], text[split + 2 :]
        lines = block[:-1].split("\n") if block else []
        if not lines:
            raise _malformed("no signature lines")
        if len(lines) > MAX_SIGNATURES:
            raise _malformed(f"more than {MAX_SIGNATURES} signatures")
        return cls(body, tuple(NoteSignature.parse_line(line) for line in lines))

    def checkpoint(self) -> Checkpoint:
        """The note text read as a checkpoint (not verified: see `verify_note`)."""
        return Checkpoint.parse(self.body)


@dataclass(frozen=True)
class VerifiedNote:
    """What `verify_note` established: the known keys whose lines verified."""

    signers: frozenset[str]  # names with a valid log signature
    cosigners: Mapping[str, int]  # names with a valid cosignature -> its (latest) timestamp


# ---- signing -------------------------------------------------------------------------------

def sign_checkpoint(checkpoint: Checkpoint, name: str, signer: Signer) -> SignedNote:
    """Sign a checkpoint as the log `name` (tlog-checkpoint: it SHOULD be the origin)."""
    problem = _name_problem(name)
    if problem:
        raise ValueError(problem)
    body = checkpoint.body()
    signature = signer.sign(body.encode())
    return SignedNote(body, (NoteSignature(name, signature_key_id(name, signer.public_key),
                                           signature),))


def add_cosignature(note: SignedNote, name: str, signer: Signer, time: int) -> SignedNote:
    """`note` with witness `name`'s cosignature at POSIX time `time` appended.

    The note text must be a checkpoint; checking that it is consistent with what the witness
    saw before is the caller's business (that is what the cosignature asserts)."""
    problem = _name_problem(name)
    if problem:
        raise ValueError(problem)
    if not 0 <= time <= MAX_TIMESTAMP:
        raise ValueError("cosignature time must be in [0, 2^63 - 1]")
    note.checkpoint()
    signature = signer.sign(_cosigned_message(note.body, time))
    line = NoteSignature(name, cosignature_key_id(name, signer.public_key),
                         time.to_bytes(8, "big") + signature)
    return SignedNote(note.body, (*note.signatures, line))


# ---- verification --------------------------------------------------------------------------

def _check_cosignature(sig: NoteSignature, key: SM2PublicKey, body: str) -> int:
    """The timestamp of a valid cosignature; NoteInvalid("bad-signature") otherwise."""
    if len(sig.signature) < 9:
        raise NoteInvalid("bad-signature", "cosignature too short", sig.name)
    timestamp = int.from_bytes(sig.signature[:8], "big")
    if timestamp > MAX_TIMESTAMP:
        raise NoteInvalid("bad-signature", "cosignature timestamp beyond 2^63 - 1", sig.name)
    try:
        key.verify(sig.signature[8:], _cosigned_message(body, timestamp))
    except SignatureInvalid as exc:
        raise NoteInvalid("bad-signature", f"cosignature: {exc.reason}", sig.name) from None
    return timestamp


def verify_note(
    note: SignedNote, verifiers: Mapping[str, SM2PublicKey], *, origin: str | None = None
) -> VerifiedNote:
    """Verify every line of `note` from a known key (name and key ID both match a verifier).

    Raises NoteInvalid: ``wrong-origin`` if `origin` is given and the note is a checkpoint of
    another log (``malformed`` if it is no checkpoint at all); ``bad-signature`` if a line
    from a known key fails; ``unknown-key`` if no line is from a known key. Other lines are
    ignored, as signed-note requires.
    """
    if origin is not None and note.checkpoint().origin != origin:
        raise NoteInvalid("wrong-origin", f"checkpoint of {note.checkpoint().origin!r}, "
                                          f"expected {origin!r}")
    body = note.body
    message = body.encode()
    signers: set[str] = set()
    cosigners: dict[str, int] = {}
    for sig in note.signatures:
        key = verifiers.get(sig.name)
        if key is None:
            continue
        if sig.key_id == signature_key_id(sig.name, key):
            try:
                key.verify(sig.signature, message)
            except SignatureInvalid as exc:
                raise NoteInvalid("bad-signature", exc.reason, sig.name) from None
            signers.add(sig.name)
        elif sig.key_id == cosignature_key_id(sig.name, key):
            timestamp = _check_cosignature(sig, key, body)
            cosigners[sig.name] = max(timestamp, cosigners.get(sig.name, 0))
    if not signers and not cosigners:
        raise NoteInvalid("unknown-key", "no signature from a known key")
    return VerifiedNote(frozenset(signers), cosigners)


def quorum(note: SignedNote, witnesses: Mapping[str, SM2PublicKey], threshold: int) -> bool:
    """Whether at least `threshold` distinct known witnesses validly cosigned `note`.

    Only cosignature lines count (not log signatures); a witness (a public key) counts once
    however many lines or names it has; a cosignature that fails to verify is not counted.
    """
    if threshold < 1:
        raise ValueError("a quorum needs a threshold of at least 1")
    counted: set[SM2PublicKey] = set()
    for sig in note.signatures:
        key = witnesses.get(sig.name)
        if key is None or key in counted or sig.key_id != cosignature_key_id(sig.name, key):
            continue
        try:
            _check_cosignature(sig, key, note.body)
        except NoteInvalid:
            continue
        counted.add(key)
    return len(counted) >= threshold
