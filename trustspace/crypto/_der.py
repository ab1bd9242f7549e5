"""The few DER shapes SM2 needs (ITU-T X.690), parsed strictly: definite short or long lengths,
minimal encodings, no trailing bytes. Anything else raises ValueError."""

from __future__ import annotations

INTEGER = 0x02
OCTET_STRING = 0x04
SEQUENCE = 0x30


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _length(len(value)) + value


def integer(n: int) -> bytes:
    if n < 0:
        raise ValueError("only non-negative integers")
    body = n.to_bytes(n.bit_length() // 8 + 1, "big")  # leading 0x00 keeps it positive
    return tlv(INTEGER, body)


def sequence(*items: bytes) -> bytes:
    return tlv(SEQUENCE, b"".join(items))


def read_tlv(data: bytes, pos: int, tag: int) -> tuple[bytes, int]:
    """Read one element with the expected tag at `pos`; return (value, next position)."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    if data[pos] != tag:
        raise ValueError(f"expected DER tag 0x{tag:02x}, found 0x{data[pos]:02x}")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise ValueError("non-minimal DER length")
        pos += count
    end = pos + length
    if end > len(data):
        raise ValueError("truncated DER")
    return data[pos:end], end


def read_integer(data: bytes, pos: int) -> tuple[int, int]:
    value, pos = read_tlv(data, pos, INTEGER)
    if not value:
        raise ValueError("empty DER INTEGER")
    if value[0] & 0x80:
        raise ValueError("negative DER INTEGER")
    if len(value) > 1 and value[0] == 0 and not value[1] & 0x80:
        raise ValueError("non-minimal DER INTEGER")
    return int.from_bytes(value, "big"), pos


def read_sequence(data: bytes) -> bytes:
    """The content of a DER SEQUENCE that must fill `data` exactly."""
    content, end = read_tlv(data, 0, SEQUENCE)
    if end != len(data):
        raise ValueError("trailing bytes after DER SEQUENCE")
    return content
