"""Checkpoints as C2SP signed notes with SM2 signatures and cosignatures."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustspace.crypto import SM2PrivateKey, SM2PublicKey, sm3
from trustspace.ledger.checkpoint import (
    MAX_SIGNATURES,
    Checkpoint,
    NoteSignature,
    SignedNote,
    add_cosignature,
    cosignature_key_id,
    quorum,
    sign_checkpoint,
    signature_key_id,
    verify_note,
)
from trustspace.ledger.errors import NoteInvalid

ORIGIN = "example.com/behind-the-sofa"
ROOT = base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
CHECKPOINT = Checkpoint(ORIGIN, 20852163, ROOT)
BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
T = 1679315147


@pytest.fixture
def log_key(keys: list[SM2PrivateKey]) -> SM2PrivateKey:
    return keys[0]


@pytest.fixture
def witnesses(keys: list[SM2PrivateKey]) -> dict[str, SM2PrivateKey]:
    return {"w1.example/a": keys[1], "w2.example/b": keys[2], "w3.example/c": keys[3]}


@pytest.fixture
def signed(log_key: SM2PrivateKey) -> SignedNote:
    return sign_checkpoint(CHECKPOINT, ORIGIN, log_key)


def _public(keys: dict[str, SM2PrivateKey]) -> dict[str, SM2PublicKey]:
    return {name: key.public_key for name, key in keys.items()}


def _reason(text: str | bytes, verifiers: dict[str, SM2PublicKey],
            origin: str | None = None) -> str:
    with pytest.raises(NoteInvalid) as caught:
        verify_note(SignedNote.parse(text), verifiers, origin=origin)
    return caught.value.reason


# ---- the format ----------------------------------------------------------------------------

def test_checkpoint_body_is_the_c2sp_text() -> None:
    assert CHECKPOINT.body() == BODY  # the tlog-checkpoint example
    assert Checkpoint.parse(BODY) == CHECKPOINT
    with_ext = Checkpoint(ORIGIN, 0, bytes(32), ("ext one", "ext: two"))
    assert with_ext.body().endswith("\next one\next: two\n")
    assert Checkpoint.parse(with_ext.body()) == with_ext


def test_signed_note_layout_and_bytes(signed: SignedNote, log_key: SM2PrivateKey) -> None:
    """The line format, and exactly the key ID and signed bytes the module docstring names."""
    text = signed.text()
    body, sig_line = text.split("\n\n")
    assert body + "\n" == BODY
    assert sig_line.startswith("\u2014 " + ORIGIN + " ") and sig_line.endswith("\n")
    raw = base64.b64decode(sig_line.split(" ")[2])
    der = log_key.public_key.to_der()
    assert len(der) == 91
    assert raw[:4] == sm3(ORIGIN.encode() + b"\n\xfftrustspace/sm2-note/v1\n" + der)[:4]
    assert raw[:4] == signature_key_id(ORIGIN, log_key.public_key)
    log_key.public_key.verify(raw[4:], BODY.encode())  # GM/T 0009 default ID, over the text


def test_cosignature_bytes(signed: SignedNote, witnesses: dict[str, SM2PrivateKey]) -> None:
    name, key = "w1.example/a", witnesses["w1.example/a"]
    cosigned = add_cosignature(signed, name, key, T)
    line = cosigned.signatures[-1]
    assert line.name == name
    assert line.key_id == sm3(
        name.encode() + b"\n\xfftrustspace/sm2-cosignature/v1\n" + key.public_key.to_der()
    )[:4] == cosignature_key_id(name, key.public_key)
    assert line.key_id != signature_key_id(name, key.public_key)
    assert line.signature[:8] == T.to_bytes(8, "big")
    key.public_key.verify(line.signature[8:], b"cosignature/v1\ntime 1679315147\n" + BODY.encode())


def test_round_trip(signed: SignedNote, log_key: SM2PrivateKey,
                    witnesses: dict[str, SM2PrivateKey]) -> None:
    note = signed
    for i, (name, key) in enumerate(witnesses.items()):
        note = add_cosignature(note, name, key, T + i)
    text = note.text()
    again = SignedNote.parse(text)
    assert again == note and again.text() == text
    assert SignedNote.parse(text.encode()) == note
    assert again.checkpoint() == CHECKPOINT
    verified = verify_note(again, {ORIGIN: log_key.public_key, **_public(witnesses)},
                           origin=ORIGIN)
    assert verified.signers == {ORIGIN}
    assert dict(verified.cosigners) == {"w1.example/a": T, "w2.example/b": T + 1,
                                        "w3.example/c": T + 2}
    only_log = verify_note(again, {ORIGIN: log_key.public_key})
    assert only_log.signers == {ORIGIN} and not only_log.cosigners
    only_witness = verify_note(again, {"w2.example/b": witnesses["w2.example/b"].public_key})
    assert not only_witness.signers and dict(only_witness.cosigners) == {"w2.example/b": T + 1}


@given(
    origin=st.text(st.characters(min_codepoint=0x20, exclude_characters="\n"), min_size=1,
                   max_size=40),
    size=st.integers(0, 2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(st.text(st.characters(min_codepoint=0x20), min_size=1, max_size=20)
                        .filter(lambda s: "\n" not in s), max_size=3),
)
def test_checkpoint_parse_round_trip(origin: str, size: int, root: bytes,
                                     extensions: list[str]) -> None:
    cp = Checkpoint(origin, size, root, tuple(extensions))
    assert Checkpoint.parse(cp.body()) == cp


# ---- tampering -----------------------------------------------------------------------------

def test_tampering_with_each_line_fails(signed: SignedNote, log_key: SM2PrivateKey) -> None:
    known = {ORIGIN: log_key.public_key}
    text = signed.text()
    verify_note(SignedNote.parse(text), known, origin=ORIGIN)
    lines = text.split("\n")  # origin, size, root, "", signature, "" (after the last newline)
    sig_raw = base64.b64decode(lines[4].split(" ")[2])

    def with_line(i: int, new: str) -> str:
        return "\n".join([*lines[:i], new, *lines[i + 1 :]])

    other_origin = with_line(0, "example.com/another-log")
    assert _reason(other_origin, known, origin=ORIGIN) == "wrong-origin"
    assert _reason(other_origin, known) == "bad-signature"
    assert _reason(with_line(1, "20852164"), known) == "bad-signature"
    other_root = base64.b64encode(bytes(32)).decode()
    assert _reason(with_line(2, other_root), known) == "bad-signature"
    flipped = sig_raw[:-1] + bytes([sig_raw[-1] ^ 1])
    bad_sig = f"\u2014 {ORIGIN} {base64.b64encode(flipped).decode()}"
    assert _reason(with_line(4, bad_sig), known) == "bad-signature"
    bad_id = f"\u2014 {ORIGIN} {base64.b64encode(b'XXXX' + sig_raw[4:]).decode()}"
    assert _reason(with_line(4, bad_id), known) == "unknown-key"
    assert _reason(with_line(4, lines[4].replace(ORIGIN, "example.com/x")), known) == \
        "unknown-key"
    with pytest.raises(NoteInvalid) as caught:
        SignedNote.parse(with_line(3, "extension"))  # no blank line left
    assert caught.value.reason == "malformed"
    with pytest.raises(NoteInvalid) as caught:
        verify_note(SignedNote.parse(with_line(1, "020852163")), known)  # size not canonical
    assert caught.value.reason == "bad-signature"
    with pytest.raises(NoteInvalid) as caught:
        verify_note(SignedNote.parse(with_line(1, "020852163")), known, origin=ORIGIN)
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize("text", [
    BODY + "\n\u2014 a AAAAAAA=",  # no final newline
    BODY + "\u2014 a AAAAAAA=\n",  # no blank line
    BODY + "\n",  # no signatures
    BODY + "\n\n",  # an empty signature line
    BODY + "\n- a AAAAAAA=\n",  # hyphen, not em dash
    BODY + "\n\u2014  a AAAAAAA=\n",  # two spaces
    BODY + "\n\u2014 a AAAAAAA= x\n",  # three fields
    BODY + "\n\u2014 a+b AAAAAAA=\n",  # plus in the name
    BODY + "\n\u2014 a\u00a0b AAAAAAA=\n",  # a Unicode space in the name
    BODY + "\n\u2014 a AAAA\n",  # 3 bytes: no room for a key ID and a signature
    BODY + "\n\u2014 a AAAAAAB=\n",  # non-canonical base64
    BODY + "\n\u2014 a AAAAAA-=\n",  # not standard base64
    BODY + "\n\u2014 a AAAAAAA\n",  # unpadded
    BODY.replace("\n", "\r\n", 1) + "\n\u2014 a AAAAAAA=\n",  # CR
    "a\tb\n" + BODY + "\n\u2014 a AAAAAAA=\n",  # tab
    BODY + "\n" + "\u2014 a AAAAAAA=\n" * (MAX_SIGNATURES + 1),
])
def test_malformed_notes(text: str) -> None:
    with pytest.raises(NoteInvalid) as caught:
        SignedNote.parse(text)
    assert caught.value.reason == "malformed"


def test_the_malformed_cases_differ_from_a_well_formed_note() -> None:
    note = SignedNote.parse(BODY + "\n\u2014 a AAAAAAA=\n")
    assert note.signatures == (NoteSignature("a", bytes(4), bytes(1)),)
    assert note.checkpoint() == CHECKPOINT


def test_not_utf8() -> None:
    with pytest.raises(NoteInvalid) as caught:
        SignedNote.parse(BODY.encode() + b"\xff\n\n\xe2\x80\x94 a AAAAAAA=\n")
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize("body", [
    "origin\n1\n",  # two lines
    "origin\n1\n" + base64.b64encode(bytes(32)).decode(),  # no final newline
    "\n1\n" + base64.b64encode(bytes(32)).decode() + "\n",  # empty origin
    "o\n01\n" + base64.b64encode(bytes(32)).decode() + "\n",  # leading zero
    "o\n+1\n" + base64.b64encode(bytes(32)).decode() + "\n",
    "o\n\u0661\n" + base64.b64encode(bytes(32)).decode() + "\n",  # an Arabic-Indic digit
    "o\n18446744073709551616\n" + base64.b64encode(bytes(32)).decode() + "\n",  # 2^64
    "o\n1" + "0" * 5000 + "\n" + base64.b64encode(bytes(32)).decode() + "\n",
    "o\n1\n" + base64.b64encode(bytes(31)).decode() + "\n",  # 31-byte root
    "o\n1\n" + base64.b64encode(bytes(32)).decode() + "\n\n",  # empty extension line
])
def test_malformed_checkpoints(body: str) -> None:
    with pytest.raises(NoteInvalid) as caught:
        Checkpoint.parse(body)
    assert caught.value.reason == "malformed"


def test_checkpoint_construction_is_checked() -> None:
    for bad in (lambda: Checkpoint("", 1, ROOT), lambda: Checkpoint("a\nb", 1, ROOT),
                lambda: Checkpoint("a", -1, ROOT), lambda: Checkpoint("a", 2**64, ROOT),
                lambda: Checkpoint("a", 1, ROOT[:31]), lambda: Checkpoint("a", 1, ROOT, ("",)),
                lambda: Checkpoint("a", 1, ROOT, ("x\ny",))):
        with pytest.raises(ValueError):
            bad()


def test_signing_arguments_are_checked(signed: SignedNote, log_key: SM2PrivateKey) -> None:
    for name in ("", "a b", "a+b"):
        with pytest.raises(ValueError):
            sign_checkpoint(CHECKPOINT, name, log_key)
        with pytest.raises(ValueError):
            add_cosignature(signed, name, log_key, T)
    for time in (-1, 2**63):
        with pytest.raises(ValueError):
            add_cosignature(signed, "w", log_key, time)
    poem = SignedNote("not a checkpoint\n", signed.signatures)
    with pytest.raises(NoteInvalid) as caught:
        add_cosignature(poem, "w", log_key, T)
    assert caught.value.reason == "malformed"


# ---- unknown lines and generic notes -------------------------------------------------------

def test_unknown_signature_lines_are_ignored(signed: SignedNote, log_key: SM2PrivateKey,
                                             keys: list[SM2PrivateKey]) -> None:
    stranger = keys[4]
    real = signed.signatures[0]
    extra = (
        NoteSignature("someone.example/else", b"\x01\x02\x03\x04", b"junk"),  # unknown name
        NoteSignature(ORIGIN, signature_key_id(ORIGIN, stranger.public_key), b"x" * 70),
        NoteSignature("someone.example/else", real.key_id, real.signature),  # same ID only
        NoteSignature("ed25519.example", b"\xaa\xbb\xcc\xdd", bytes(64)),
    )
    note = SignedNote.parse(SignedNote(signed.body, (*extra, real)).text())
    assert verify_note(note, {ORIGIN: log_key.public_key}, origin=ORIGIN).signers == {ORIGIN}
    only_unknown = SignedNote(signed.body, extra)
    with pytest.raises(NoteInvalid) as caught:
        verify_note(only_unknown, {ORIGIN: log_key.public_key})
    assert caught.value.reason == "unknown-key"
    with pytest.raises(NoteInvalid) as caught:
        verify_note(signed, {})
    assert caught.value.reason == "unknown-key"


def test_a_bad_line_from_a_known_key_rejects_the_note(
    signed: SignedNote, log_key: SM2PrivateKey, witnesses: dict[str, SM2PrivateKey]
) -> None:
    name = "w1.example/a"
    cosigned = add_cosignature(signed, name, witnesses[name], T)
    good = cosigned.signatures[-1]
    later = NoteSignature(name, good.key_id, (T + 1).to_bytes(8, "big") + good.signature[8:])
    tampered = SignedNote(signed.body, (*signed.signatures, later))
    verifiers = {ORIGIN: log_key.public_key, **_public(witnesses)}
    with pytest.raises(NoteInvalid) as caught:
        verify_note(tampered, verifiers)
    assert (caught.value.reason, caught.value.name) == ("bad-signature", name)
    short = NoteSignature(name, good.key_id, good.signature[:8])
    with pytest.raises(NoteInvalid) as caught:
        verify_note(SignedNote(signed.body, (*signed.signatures, short)), verifiers)
    assert caught.value.reason == "bad-signature"


def test_notes_that_are_not_checkpoints(log_key: SM2PrivateKey) -> None:
    body = ("Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n"
            "\ned è subito sera.\n")
    line = NoteSignature("quasimodo.example/salvatore",
                         signature_key_id("quasimodo.example/salvatore", log_key.public_key),
                         log_key.sign(body.encode()))
    note = SignedNote.parse(SignedNote(body, (line,)).text())
    assert note.body == body  # the last blank line separates, the poem keeps its own
    verified = verify_note(note, {"quasimodo.example/salvatore": log_key.public_key})
    assert verified.signers == {"quasimodo.example/salvatore"}
    with pytest.raises(NoteInvalid) as caught:
        verify_note(note, {"quasimodo.example/salvatore": log_key.public_key}, origin="x")
    assert caught.value.reason == "malformed"


# ---- quorum --------------------------------------------------------------------------------

def test_quorum_counts_distinct_valid_witnesses(
    signed: SignedNote, log_key: SM2PrivateKey, witnesses: dict[str, SM2PrivateKey],
    keys: list[SM2PrivateKey],
) -> None:
    public = _public(witnesses)
    one = add_cosignature(signed, "w1.example/a", witnesses["w1.example/a"], T)
    assert quorum(one, public, 1)
    assert not quorum(one, public, 2)
    twice = add_cosignature(one, "w1.example/a", witnesses["w1.example/a"], T + 5)
    assert not quorum(twice, public, 2)  # the same witness counts once
    two = add_cosignature(twice, "w2.example/b", witnesses["w2.example/b"], T)
    assert quorum(two, public, 2)
    assert not quorum(two, public, 3)

    # an invalid cosignature is not counted, and does not raise
    good = add_cosignature(two, "w3.example/c", witnesses["w3.example/c"], T).signatures[-1]
    forged = NoteSignature(good.name, good.key_id, good.signature[:-1] + b"\x00")
    assert not quorum(SignedNote(two.body, (*two.signatures, forged)), public, 3)
    assert quorum(SignedNote(two.body, (*two.signatures, forged, good)), public, 3)

    # unknown witnesses, and log-style signatures by witness keys, do not count
    stranger = add_cosignature(signed, "w9.example/z", keys[4], T)
    assert not quorum(stranger, public, 1)
    log_style = sign_checkpoint(CHECKPOINT, "w1.example/a", witnesses["w1.example/a"])
    assert not quorum(log_style, public, 1)
    assert not quorum(signed, {ORIGIN: log_key.public_key}, 1)

    # one key under two names is one witness
    alias = {"w1.example/a": public["w1.example/a"], "alias.example": public["w1.example/a"]}
    both = add_cosignature(one, "alias.example", witnesses["w1.example/a"], T)
    assert not quorum(both, alias, 2)
    assert quorum(both, alias, 1)

    # a witness's cosignature over another checkpoint does not count here
    other = sign_checkpoint(Checkpoint(ORIGIN, 1, bytes(32)), ORIGIN, log_key)
    moved = SignedNote(other.body, (*other.signatures, *two.signatures[1:]))
    assert not quorum(moved, public, 1)

    with pytest.raises(ValueError):
        quorum(two, public, 0)
